#include "list_maker.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <span>
#include <system_error>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"
#include "reports.hpp"

namespace ks {

namespace {

void signal_ready(int fd) {
  const std::uint64_t one = 1;
  (void)!::write(fd, &one, sizeof(one));  // (an eventfd's counter: cannot fail here)
}

void clear_ready(int fd) {
  std::uint64_t count = 0;
  (void)!::read(fd, &count, sizeof(count));  // (EAGAIN when it was not set)
}

// The profile of the deepest classified cgroup from `path` up to the tree's root.
template <typename Entries>
std::uint32_t profile_of(std::string path, const std::string& root, const Entries& entries) {
  while (path.size() >= root.size()) {
    try {
      if (auto it = entries.find(cgroup_id(path)); it != entries.end())
        return it->second.profile_id;
    } catch (const Error&) {  // gone meanwhile: its parent may still say
    }
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) break;
    path.resize(slash);
  }
  return KS_PROFILE_NONE;
}

}  // namespace

void ListInput::add(std::string_view path, std::uint64_t id, bool is_app,
                    std::string_view command) {
  Row row{id, is_app};
  row.path_at = static_cast<std::uint32_t>(text.size());
  row.path_size = static_cast<std::uint32_t>(path.size());
  text += path;
  row.command_at = static_cast<std::uint32_t>(text.size());
  row.command_size = static_cast<std::uint32_t>(command.size());
  text += command;
  rows.push_back(row);
}

ListMaker::Job::Taken ListMaker::Job::take(std::string& out) {
  std::lock_guard lock(mutex_);
  if (parts_.empty()) {
    if (ended_) return Taken::kEnded;
    // The caller waits on fd() now: put() sets it once there is a batch to take.
    clear_ready(ready_fd_.get());
    caller_waits_ = true;
    return Taken::kNothingYet;
  }
  out += parts_.front();
  queued_bytes_ -= parts_.front().size();
  parts_.pop_front();
  if (thread_waits_) taken_.notify_one();
  return Taken::kText;
}

void ListMaker::Job::give(ListInput input) {
  {
    std::lock_guard lock(mutex_);
    input_ = std::move(input);
    given_ = true;
  }
  taken_.notify_one();
}

bool ListMaker::Job::wait_for_input() {
  std::unique_lock lock(mutex_);
  taken_.wait(lock, [this] { return abandoned_ || given_; });
  return !abandoned_;
}

void ListMaker::Job::abandon() {
  {
    std::lock_guard lock(mutex_);
    abandoned_ = true;
  }
  taken_.notify_one();
}

bool ListMaker::Job::put(std::string&& part) {
  std::unique_lock lock(mutex_);
  thread_waits_ = true;
  taken_.wait(lock, [this] { return abandoned_ || queued_bytes_ < kMaxQueuedBytes; });
  thread_waits_ = false;
  if (abandoned_) return false;
  queued_bytes_ += part.size();
  parts_.push_back(std::move(part));
  // The caller is woken for a batch of parts, not for each: every wakeup of ksd's loop is
  // a few system calls and two context switches (for each 32 KiB part: a sixth of a list's
  // CPU time).
  if (caller_waits_ && queued_bytes_ >= kWakeBytes) {
    caller_waits_ = false;
    signal_ready(ready_fd_.get());
  }
  return true;
}

void ListMaker::Job::end() {
  std::lock_guard lock(mutex_);
  input_ = {};  // (the copy of the apps goes with the job's end: see run's malloc_trim)
  ended_ = true;
  if (caller_waits_) signal_ready(ready_fd_.get());
}

ListMaker::~ListMaker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& job : making_) job->abandon();  // (a thread waiting for its client goes on)
  }
  for (auto& worker : workers_)
    if (worker.thread.joinable()) worker.thread.join();
}

void ListMaker::join_finished() {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (!it->finished) {
      ++it;
      continue;
    }
    it->thread.join();  // (it has returned from run(): at most its last instructions left)
    it = workers_.erase(it);
  }
}

std::shared_ptr<ListMaker::Job> ListMaker::start() {
  UniqueFd ready_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ready_fd) throw_errno("eventfd");
  std::shared_ptr<Job> job(new Job(std::move(ready_fd)));
  std::lock_guard lock(mutex_);
  join_finished();
  queue_.push_back(job);
  if (running_ < kThreads) {
    // Started by ksd's loop: it inherits the loop's signal mask (the signals its signalfd
    // takes), so no signal is ever delivered to it.
    Worker& worker = workers_.emplace_back();
    try {
      worker.thread = std::thread([this, &worker] { run(worker); });
      ::pthread_setname_np(worker.thread.native_handle(), "ksd-list");  // (ps -L, top -H)
      ++running_;
    } catch (const std::system_error& e) {
      workers_.pop_back();
      // With threads running, the list waits for one of them.
      if (running_ == 0) {
        queue_.pop_back();
        throw Error(std::string("cannot start a thread to make the list: ") + e.what());
      }
    }
  }
  return job;
}

void ListMaker::run(Worker& worker) {
  // The lowest priority there is: whatever else wants the CPU (ksd's loop answering a
  // status, the client that asked, anyone's work) preempts the list at once. Where the
  // kernel refuses (it does not for lowering one's own), the list is made at ksd's nice.
  const sched_param none{};
  ::sched_setscheduler(0, SCHED_IDLE, &none);
  std::unique_lock lock(mutex_);
  while (!stopping_ && !queue_.empty()) {
    std::shared_ptr<Job> job = std::move(queue_.front());
    queue_.pop_front();
    making_.push_back(job);
    lock.unlock();
    std::size_t made = 0;
    try {
      made = make(*job);
    } catch (const std::exception& e) {  // (out of memory, a cgroup read that failed)
      job->findings_.error = e.what();
    }
    job->end();
    // A list of thousands of apps leaves thousands of small freed blocks (its copy of the
    // apps, the maps it read, the text), in this thread's heap and ksd's main one; their
    // pages go back now, so that ksd's resident memory stays what its state needs: with
    // 10,000 apps 12.6 MB after lists, 16-17 MB without this. Here rather than on ksd's
    // loop: ~2 ms of work.
    if (made > kTrimAfterBytes) ::malloc_trim(0);
    lock.lock();
    std::erase(making_, job);
  }
  --running_;
  worker.finished = true;
}

ListMaker::ReadKernelSide ListMaker::reading(const Enforcement& enforcement) {
  struct TaskIterator {
    std::once_flag once;
    std::unique_ptr<TaskCgroups> loaded;  // null when it cannot load
    std::string why_not;
  };
  auto iterator = std::make_shared<TaskIterator>();
  return [&enforcement, iterator](ListFindings& found) {
    ListKernelSide side;
    Enforcement::BatchPosition at;
    while (!at.done) enforcement.read_cgroup_entries(at, side.entries);
    at = {};
    while (!at.done) enforcement.read_counters_by_cgroup(at, side.by_cgroup);
    std::call_once(iterator->once, [&] {
      iterator->loaded = TaskCgroups::load(iterator->why_not);
      if (!iterator->loaded)
        found.notes.push_back("ksctl list reads every app's cgroup.procs: " + iterator->why_not);
    });
    if (!iterator->loaded) return side;
    try {
      // In small steps: the kernel walks tasks for a read without a preemption point
      // (Debian's and this machine's kernels preempt only at such points), and 32 KiB, what
      // one read gives, held a CPU for 4-7 ms with 100,000 sockets' processes; 4 KiB ~0.5 ms.
      TaskCgroupsReading reading = iterator->loaded->start_read();
      while (reading.step(4 * 1024)) {
      }
      side.pids = reading.take();
    } catch (const Error& e) {
      found.notes.push_back(std::string("ksctl list falls back to cgroup.procs: ") + e.what());
    }
    return side;
  };
}

std::size_t ListMaker::make(Job& job) {
  const ListInput& in = job.input_;  // (once given)
  ListFindings& found = job.findings_;
  // (An exception here is the list's error: see run.)
  const auto [entries, by_cgroup, all_pids] = read_kernel_side_(found);
  if (!job.wait_for_input()) return 0;
  // Without the iterator each app's cgroup.procs is read relative to its slice, opened once:
  // in path order, each slice's apps come together.
  std::vector<const ListInput::Row*> rows;
  rows.reserve(in.rows.size());
  for (const auto& row : in.rows) rows.push_back(&row);
  if (!all_pids)
    std::sort(rows.begin(), rows.end(),
              [&](auto* a, auto* b) { return in.path(*a) < in.path(*b); });
  std::string parent_path;
  UniqueFd parent;

  std::string text;
  std::size_t made = 0;  // bytes of text put
  JsonText j(text);
  j.begin_object().member("ok", true).key("apps").begin_array();
  for (const ListInput::Row* row : rows) {
    const std::string_view path = in.path(*row);
    // The id of a cgroup ksd does not track needs a stat; 0 when it is gone meanwhile.
    auto id_of = [&]() -> std::uint64_t {
      if (row->is_app) return row->id;
      try {
        return cgroup_id(std::string(path));
      } catch (const Error&) {
        return 0;
      }
    };
    std::vector<pid_t> read_pids;
    std::span<const pid_t> pids;
    std::uint64_t id = 0;
    if (all_pids) {
      if ((id = id_of()) == 0) continue;
      pids = all_pids->of(id);
    } else {
      const std::size_t slash = path.find_last_of('/');
      if (path.substr(0, slash) != parent_path) {
        parent_path = path.substr(0, slash);
        parent = UniqueFd(::open(parent_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      }
      read_pids = parent ? cgroup_pids_at(parent.get(), std::string(path.substr(slash + 1)))
                         : cgroup_pids(std::string(path));
      pids = read_pids;
    }
    // An app that ended since the loop's copy has no processes to list.
    if (pids.empty()) continue;
    if (!all_pids && (id = id_of()) == 0) continue;  // (a stat: only for cgroups with processes)
    const auto entry = entries.find(id);
    const std::uint32_t profile = row->is_app && entry != entries.end()
                                      ? entry->second.profile_id
                                      : profile_of(std::string(path), in.tree_root, entries);
    std::string_view command = in.command(*row);
    std::string read_command;
    if (command.empty()) {
      command = read_command = read_cmdline(pids.front());
      if (row->is_app) found.commands[row->id] = read_command;  // (ksd keeps it)
    }
    Counters c;
    if (auto it = by_cgroup.find(id); it != by_cgroup.end()) c += it->second;
    if (entry != entries.end() && entry->second.app_slot != 0 &&
        entry->second.app_slot < in.by_slot.size())
      c += in.by_slot[entry->second.app_slot];

    const auto name = in.profile_names.find(profile);
    j.begin_object().member("cgroup", path.substr(in.cgroup_mount.size()));
    j.member("cgroup_id", id);
    j.member("profile", name != in.profile_names.end() ? name->second : "(none: blocked)");
    j.key("pids").begin_array();
    for (pid_t pid : pids) j.value(std::int64_t{pid});
    j.end_array();
    j.member("command", command);
    j.member("allowed_packets", c.allowed_packets).member("blocked_packets", c.blocked_packets);
    j.key("counters").counters(c).end_object();
    if (text.size() >= kPartBytes) {
      made += text.size();
      if (!job.put(std::move(text))) return made;
      text = std::string();
      text.reserve(kPartBytes + 1024);
    }
  }
  j.end_array().end_object();
  made += text.size();
  job.put(std::move(text));
  return made;
}

}  // namespace ks
