// ksctl events [--follow] [--json]: blocked attempts, as ksd received them from the
// programs' ring buffer.
#include "killswitch/events.hpp"

#include <cstdio>
#include <ctime>
#include <iostream>

#include "commands.hpp"
#include "killswitch/error.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch_abi.h"
#include "output.hpp"

namespace ksctl {
namespace {

std::vector<std::string> event_row(const nlohmann::json& e) {
  std::string app = e.value("app", std::string());
  app = app.substr(app.find_last_of('/') + 1);
  std::uint32_t pid = e.value("pid", 0u);
  std::string what = e.value("protocol", std::string());
  std::string dst = e.value("destination", std::string());
  if (!dst.empty()) what += (what.empty() ? "" : " ") + dst;
  std::string command = e.value("command", std::string());
  if (command.empty()) command = e.value("comm", std::string());
  return {ks::format_local(e.value("time_us", std::int64_t{0})),
          app,
          pid ? std::to_string(pid) : "-",
          e.value("hook", std::string()),
          what,
          red(e.value("reason", std::string())),
          command.substr(0, 60)};
}

const std::vector<std::string> kHeader = {"TIME",        "APP",    "PID",    "HOOK",
                                          "DESTINATION", "REASON", "COMMAND"};

}  // namespace

int events_command(const EventsOptions& options) {
  std::size_t limit = options.limit ? options.limit : options.follow ? 10 : 1000;
  nlohmann::json request = {
      {"op", "events"}, {"since", options.since}, {"limit", limit}, {"follow", options.follow}};
  ks::UniqueFd fd;
  nlohmann::json reply;
  try {
    fd = ks::ipc::connect_to(options.socket_path);
    ks::ipc::send_message(fd.get(), request);
    reply = ks::ipc::receive_message(fd.get(), 10000);
  } catch (const ks::Error& e) {
    std::fprintf(stderr, "ksctl: %s\n", e.what());
    return kDaemonDown;
  }
  if (!reply.value("ok", false)) {
    std::fprintf(stderr, "ksctl: %s\n", reply.value("error", std::string("failed")).c_str());
    return kFailed;
  }
  const auto& events = reply["events"];

  if (!options.follow) {
    if (options.json) {
      reply.erase("ok");
      std::cout << json_text(reply) << "\n";
      return kOk;
    }
    if (events.empty()) {
      std::printf("no blocked attempts recorded\n");
    } else {
      Table table(kHeader);
      for (const auto& e : events) table.row(event_row(e));
      table.print();
    }
    std::uint64_t dropped = reply.value("events_dropped", std::uint64_t{0});
    std::printf(
        "\n%llu blocked attempt(s) in total; %llu without an event (rate limit per app and "
        "second: %d network and %d unix-socket attempts)\n",
        static_cast<unsigned long long>(reply.value("blocked_total", std::uint64_t{0})),
        static_cast<unsigned long long>(dropped), KS_EVENTS_PER_WINDOW, KS_EVENTS_PER_WINDOW);
    return kOk;
  }

  // --follow: the backlog, then each event as ksd pushes it, until ksd ends the stream.
  // Rows come one at a time, so the columns have fixed widths.
  auto print_fixed = [](const std::vector<std::string>& cells) {
    static const std::size_t kWidths[] = {23, 24, 7, 12, 28, 14};
    std::string line;
    for (std::size_t i = 0; i < cells.size(); ++i)
      line += i + 1 < cells.size() ? pad(cells[i], kWidths[i]) + "  " : cells[i];
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  auto show = [&](const nlohmann::json& e) {
    if (options.json)
      std::cout << e.dump() << std::endl;
    else
      print_fixed(event_row(e));
  };
  if (!options.json) print_fixed(kHeader);
  for (const auto& e : events) show(e);
  for (;;) {
    nlohmann::json message;
    try {
      message = ks::ipc::receive_message(fd.get(), -1);
    } catch (const ks::Error& e) {
      std::fprintf(stderr, "ksctl: the event stream ended: %s\n", e.what());
      return kDaemonDown;
    }
    if (message.contains("event")) show(message["event"]);
  }
}

}  // namespace ksctl
