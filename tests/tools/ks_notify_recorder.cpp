// A stand-in notification server for the lab (tests/lab/test_desktop.sh): owns
// org.freedesktop.Notifications on the session bus (DBUS_SESSION_BUS_ADDRESS) and appends
// one JSON line per Notify call to FILE, answering with ids 1, 2, 3... (a replaced
// notification keeps its id, as real servers do). GetServerInformation and
// GetCapabilities answer like a minimal server. Runs until SIGTERM.
//
//   ks-notify-recorder FILE
#include <signal.h>
#include <systemd/sd-bus.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

std::string g_file;
std::uint32_t g_next_id = 1;
volatile sig_atomic_t g_stop = 0;

int on_notify(sd_bus_message* m, void*, sd_bus_error*) {
  const char *app = nullptr, *icon = nullptr, *summary = nullptr, *body = nullptr;
  std::uint32_t replaces = 0;
  int r = sd_bus_message_read(m, "susss", &app, &replaces, &icon, &summary, &body);
  if (r < 0) return r;
  nlohmann::json actions = nlohmann::json::array();
  r = sd_bus_message_enter_container(m, 'a', "s");
  if (r < 0) return r;
  const char* a = nullptr;
  while ((r = sd_bus_message_read(m, "s", &a)) > 0) actions.push_back(a);
  if (r < 0) return r;
  sd_bus_message_exit_container(m);
  nlohmann::json hints = nlohmann::json::object();
  r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r < 0) return r;
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const char* key = nullptr;
    sd_bus_message_read(m, "s", &key);
    char type = 0;
    const char* contents = nullptr;
    sd_bus_message_peek_type(m, &type, &contents);
    if (contents && std::strcmp(contents, "y") == 0) {
      std::uint8_t y = 0;
      sd_bus_message_read(m, "v", "y", &y);
      hints[key] = y;
    } else if (contents && std::strcmp(contents, "s") == 0) {
      const char* s = nullptr;
      sd_bus_message_read(m, "v", "s", &s);
      hints[key] = s;
    } else {
      sd_bus_message_skip(m, "v");
    }
    sd_bus_message_exit_container(m);
  }
  if (r < 0) return r;
  sd_bus_message_exit_container(m);
  std::int32_t expire = 0;
  r = sd_bus_message_read(m, "i", &expire);
  if (r < 0) return r;
  std::uint32_t id = replaces ? replaces : g_next_id++;
  nlohmann::json line = {{"app_name", app},
                         {"replaces_id", replaces},
                         {"id", id},
                         {"icon", icon},
                         {"summary", summary},
                         {"body", body},
                         {"actions", actions},
                         {"hints", hints},
                         {"expire_timeout", expire},
                         {"sender", sd_bus_message_get_sender(m)}};
  std::ofstream(g_file, std::ios::app) << line.dump() << std::endl;
  return sd_bus_reply_method_return(m, "u", id);
}

int on_info(sd_bus_message* m, void*, sd_bus_error*) {
  return sd_bus_reply_method_return(m, "ssss", "ks-notify-recorder", "killswitch", "1", "1.2");
}

int on_caps(sd_bus_message* m, void*, sd_bus_error*) {
  return sd_bus_reply_method_return(m, "as", 1, "body");
}

int on_close(sd_bus_message* m, void*, sd_bus_error*) { return sd_bus_reply_method_return(m, ""); }

const sd_bus_vtable kVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("Notify", "susssasa{sv}i", "u", on_notify, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("GetServerInformation", "", "ssss", on_info, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("GetCapabilities", "", "as", on_caps, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("CloseNotification", "u", "", on_close, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END};

void stop(int) { g_stop = 1; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: ks-notify-recorder FILE\n");
    return 2;
  }
  g_file = argv[1];
  struct sigaction sa {};
  sa.sa_handler = stop;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sd_bus* bus = nullptr;
  int r = sd_bus_open_user(&bus);
  if (r >= 0)
    r = sd_bus_add_object_vtable(bus, nullptr, "/org/freedesktop/Notifications",
                                 "org.freedesktop.Notifications", kVtable, nullptr);
  if (r >= 0) r = sd_bus_request_name(bus, "org.freedesktop.Notifications", 0);
  if (r < 0) {
    std::fprintf(stderr, "ks-notify-recorder: %s\n", std::strerror(-r));
    return 1;
  }
  std::fprintf(stderr, "ks-notify-recorder: serving org.freedesktop.Notifications\n");
  while (!g_stop) {
    r = sd_bus_process(bus, nullptr);
    if (r < 0) {
      std::fprintf(stderr, "ks-notify-recorder: %s\n", std::strerror(-r));
      break;
    }
    if (r > 0) continue;
    r = sd_bus_wait(bus, 200'000);
    if (r < 0 && r != -EINTR) break;
  }
  sd_bus_flush_close_unref(bus);
  return 0;
}
