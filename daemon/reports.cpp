#include "reports.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"
#include "killswitch/log.hpp"

namespace ks {

std::string read_cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  std::replace(raw.begin(), raw.end(), '\0', ' ');
  return raw;
}

Reports::Reports(std::string pin_dir, const Enforcement& enforcement, const PolicySync& policy,
                 const ProtectedTree& tree, AppRegistry& registry)
    : pin_dir_(std::move(pin_dir)),
      enforcement_(enforcement),
      policy_(policy),
      tree_(tree),
      registry_(registry),
      list_maker_(ListMaker::reading(enforcement)) {}

std::string Reports::status_text() {
  std::string out;
  JsonText j(out);
  j.begin_object().member("ok", true).member("daemon", "running").member("version", KS_VERSION);
  j.member("pid", std::int64_t{::getpid()}).member("config", policy_.config_path());
  j.member("cgroup_root", tree_.root()).member("pin_dir", pin_dir_);
  // Tunnels are looked up, and protected sockets judged, in ksd's network namespace.
  struct stat netns {};
  if (::stat("/proc/self/ns/net", &netns) == 0)
    j.member("netns_inode", static_cast<std::uint64_t>(netns.st_ino));

  const std::string missing = tree_.not_effective_on(tree_.root());
  j.key("programs").begin_object();
  j.member("pinned", Enforcement::pins_present(pin_dir_)).member("attached", missing.empty());
  if (!missing.empty()) j.member("missing", missing);
  j.key("ids").begin_object();
  for (const auto& [hook, id] : enforcement_.program_ids()) j.member(hook, id);
  j.end_object().end_object();

  j.key("profiles").begin_object();
  for (const auto& p : policy_.config().profiles) {
    if (p.name == kVerifyProfile) continue;  // internal
    const std::uint32_t id = policy_.ids().at(p.name);
    const auto& tunnels = policy_.tunnels_of(p.name);
    j.key(p.name).begin_object();
    j.member("id", id).member("cgroup", tree_.relative(tree_.profile_slice_path(p.name)));
    j.key("tunnels").begin_array();
    bool any_up = false;
    for (const auto& t : tunnels) {
      j.begin_object().member("name", t.name).member("state", tunnel_state_name(t.state));
      j.member("ifindex", t.ifindex).member("ipv4", t.ipv4).member("ipv6", t.ipv6).end_object();
      any_up = any_up || t.state == TunnelState::kUp;
    }
    j.end_array();
    if (any_up) {
      j.member("traffic", "through tunnel");
    } else {
      // Why: each tunnel and its state ("wg0 missing", "wg1 down").
      std::string why;
      for (const auto& t : tunnels)
        why += (why.empty() ? "" : ", ") + t.name + " " + tunnel_state_name(t.state);
      j.member("traffic", "blocked: " + (why.empty() ? std::string("no tunnel configured") : why));
    }
    j.key("counters").counters(enforcement_.profile_counters(id));
    j.key("dns").begin_array();
    for (const auto& d : p.dns) j.value(d.text);
    j.end_array().key("allow_lan").begin_array();
    for (const auto& c : p.allow_lan) j.value(c.text);
    j.end_array().end_object();
  }
  j.end_object();

  j.member("protected_apps", static_cast<std::uint64_t>(protected_apps()));
  const Counters totals = enforcement_.totals();
  j.member("blocked_total", totals.blocked_packets + totals.blocked_connects);
  j.key("counters").counters(totals).end_object();
  return out;
}

std::size_t Reports::protected_apps() const {
  // With only known cgroups in the tree, the tracked apps are the count (one that emptied
  // leaves at the next sweep, within a second): no walk and no read per app, which with
  // 10,000 apps cost 0.4 s per status. Anything unknown in the tree: walk and look.
  // Ready scopes (a placeholder waiting for a launch) are not apps.
  const Config& config = policy_.config();
  std::size_t count = 0;
  std::unordered_set<std::string> ready;
  for (std::uint64_t id : registry_.ready())
    if (const App* app = registry_.find(id)) ready.insert(app->path);
  if (tree_.holds_only(config, registry_.apps().size())) {
    count = registry_.apps().size() - ready.size();
    for (const auto& p : config.profiles)
      if (!cgroup_pids(tree_.profile_slice_path(p.name)).empty()) ++count;
  } else {
    tree_.walk([&](const std::string& cg) {
      if (!ready.contains(cg) && !cgroup_pids(cg).empty()) ++count;
    });
  }
  return count;
}

// The list as ksd's loop serves it: a ListMaker thread reads the kernel's side while the
// loop copies what it knows of the apps a batch per turn (their paths and commands; no
// system call unless the tree holds cgroups it does not know) and hands that over; the
// loop passes the text on as the thread makes it. The text of 10,000 apps is 4 MB: ksd
// never holds it all (the thread waits while its client has not taken what was made), and
// the loop's part of a list is ~1 ms of copying in turns of ~0.1 ms.
class Reports::ListSource : public TextSource {
 public:
  // The thread's reads begin now; anything that fails from here on comes out of next(), and
  // the source's end abandons the job.
  explicit ListSource(Reports& reports) : reports_(reports), job_(reports.list_maker_.start()) {}
  ~ListSource() override { job_->abandon(); }

  // (In kText, next() appends nothing only when take() found nothing: then the job sets
  // its fd once there is text.)
  int waiting_on() const override { return stage_ == Stage::kText ? job_->fd() : -1; }

  bool next(std::string& out) override {
    if (stage_ == Stage::kBegin) {
      begin();
      return true;
    }
    if (stage_ == Stage::kRows) {
      // The tracked apps from where the last batch ended: by id, so that apps coming and
      // going in between move nothing (one that comes is listed or not, as with any
      // snapshot; one that goes has no processes when the thread gets to it).
      const auto& apps = reports_.registry_.apps();
      auto it = last_app_ ? apps.upper_bound(*last_app_) : apps.begin();
      for (int n = 0; n < kRowsPerStep && it != apps.end(); ++n, ++it) {
        if (is_listed(it->second)) input_.add(it->second.path, it->first, true, it->second.command);
        last_app_ = it->first;
      }
      if (it == apps.end()) stage_ = Stage::kStart;
      return true;
    }
    if (stage_ == Stage::kStart) {
      // Read here, not by the thread: ksd's loop writes these rows in place (mapped memory).
      input_.by_slot = reports_.enforcement_.all_counters_by_slot();
      input_.cgroup_mount = reports_.tree_.mount();
      input_.tree_root = reports_.tree_.root();
      for (const auto& [name, id] : reports_.policy_.ids()) input_.profile_names[id] = name;
      job_->give(std::move(input_));
      stage_ = Stage::kText;
      // (On to take(): the server waits on waiting_on() only after take() found nothing.)
    }
    // Text, or none yet (then the server waits on waiting_on()), or the end.
    if (job_->take(out) != ListMaker::Job::Taken::kEnded) return true;
    const ListFindings& found = job_->findings();
    for (const std::string& note : found.notes) log_info(note);
    if (!found.error.empty()) throw Error(found.error);
    // Adopted apps get their command from their first list.
    for (const auto& [id, command] : found.commands)
      if (App* app = reports_.registry_.find(id); app && app->command.empty())
        app->command = command;
    return false;
  }

 private:
  // Which cgroups, the apps copied, handed to the thread, its text passed on.
  enum class Stage { kBegin, kRows, kStart, kText };
  // ~0.1 ms of copying here (all 10,000 apps at once: ~1 ms, every list).
  static constexpr int kRowsPerStep = 1024;

  void begin() {
    const Config& config = reports_.policy_.config();
    const ProtectedTree& tree = reports_.tree_;
    AppRegistry& registry = reports_.registry_;
    // Only known cgroups in the tree: those are the ones to list, no directory walk (three
    // system calls per app), the apps copied a batch per turn (kRows). Anything else and
    // the walk finds it.
    if (tree.holds_only(config, registry.apps().size())) {
      input_.rows.reserve(config.profiles.size() + registry.apps().size());
      input_.text.reserve(registry.apps().size() * 128);  // (a path and a command: ~110)
      for (const auto& p : config.profiles) input_.add(tree.profile_slice_path(p.name));
      stage_ = Stage::kRows;
      return;
    }
    std::unordered_map<std::string, const App*> tracked;
    for (const auto& [id, app] : registry.apps()) tracked[app.path] = &app;
    tree.walk([&](const std::string& cg) {
      auto it = tracked.find(cg);
      if (it == tracked.end())
        input_.add(cg);
      else if (const App& app = *it->second; is_listed(app))
        input_.add(cg, app.cgroup_id, true, app.command);
    });
    stage_ = Stage::kStart;
  }

  // A ready scope (a placeholder waiting for a launch) is no app yet.
  static bool is_listed(const App& app) { return app.holder == 0; }

  Reports& reports_;
  std::shared_ptr<ListMaker::Job> job_;
  ListInput input_;                        // (until the thread has it)
  std::optional<std::uint64_t> last_app_;  // the last app copied (kRows goes on after it)
  Stage stage_ = Stage::kBegin;
};

std::unique_ptr<TextSource> Reports::list_source() { return std::make_unique<ListSource>(*this); }

}  // namespace ks
