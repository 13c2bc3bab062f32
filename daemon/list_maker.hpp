// ListMaker: the text of `ksctl list`, made by threads of ksd's own while its loop goes on
// serving status, events and launches. With 10,000 apps a list is ~4 MB of text and ~30 ms
// of work (the classification map, the counters, every process's cgroup through the task
// iterator, then the text). Made on ksd's loop, in turns of up to 250 us, every request
// that came during a list waited for a turn, and the loop (at nice -10) spent those 30 ms
// ahead of everyone else's work. Made here, at the lowest priority there is (SCHED_IDLE:
// any other runnable task preempts it at once), the loop's part is copying what it knows
// of the apps (1,024 per turn) and passing the text on (docs/benchmarks.md, "Lists made
// off ksd's loop").
//
// The threads read only what the loop hands them (ListInput, a copy) and the kernel,
// through file descriptors that live as long as ksd (the maps, the iterator's link) or
// /proc and cgroupfs; nothing the loop changes is shared with them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "killswitch/counters.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/task_cgroups.hpp"

namespace ks {

// What ksd's loop knows of the cgroups to list, copied for a list's thread.
struct ListInput {
  struct Row {
    std::uint64_t id = 0;  // tracked apps' cgroup id; 0: found with a stat when listed
    bool is_app = false;   // tracked by ksd
    std::uint32_t path_at = 0, path_size = 0;        // the absolute cgroup path, in `text`
    std::uint32_t command_at = 0, command_size = 0;  // a tracked app's command, when known
  };
  // A row, its strings appended to `text`: one buffer for all of them (10,000 rows' paths
  // and commands in strings of their own were 20,000 allocations and frees per list).
  void add(std::string_view path, std::uint64_t id = 0, bool is_app = false,
           std::string_view command = {});
  // A row's strings (valid while `text` does not grow: once every row is added).
  std::string_view path(const Row& row) const { return text_of(row.path_at, row.path_size); }
  // "": read it from the app's first process.
  std::string_view command(const Row& row) const {
    return text_of(row.command_at, row.command_size);
  }

  std::vector<Row> rows;
  std::string text;
  std::string cgroup_mount;  // the cgroup2 mount (listed paths are relative to it)
  std::string tree_root;     // the protected tree (a profile is looked for up to it)
  std::map<std::uint32_t, std::string> profile_names;  // by id
  std::vector<Counters> by_slot;  // the counters of apps' marked sockets, by slot

 private:
  std::string_view text_of(std::uint32_t at, std::uint32_t size) const {
    return std::string_view(text).substr(at, size);
  }
};

// The kernel's side of a list, read by its thread before the text is made.
struct ListKernelSide {
  std::unordered_map<std::uint64_t, ks_cgroup_value> entries;  // the classification map
  std::unordered_map<std::uint64_t, Counters> by_cgroup;       // counters by cgroup id
  std::optional<PidsByCgroup> pids;  // every process by cgroup; nullopt: read cgroup.procs
};

// What a list found out besides its text, for the loop once the list is made.
struct ListFindings {
  std::unordered_map<std::uint64_t, std::string> commands;  // of tracked apps that had none
  std::vector<std::string> notes;  // for ksd's log (written by the loop: one writer)
  std::string error;               // what failed: the list ends with it
};

class ListMaker {
 public:
  // Reads the kernel's side, on a list's thread (several at once); what is worth a line in
  // ksd's log goes into the findings' notes. Throws ks::Error: the list fails with it.
  using ReadKernelSide = std::function<ListKernelSide(ListFindings&)>;
  // The real one: ksd's maps, and every process's cgroup through the task iterator (loaded
  // by the first list: libbpf parses the kernel's BTF for it, a quarter of a second here;
  // where it cannot load, each app's cgroup.procs is read instead).
  static ReadKernelSide reading(const Enforcement& enforcement);

  // One list: its text as it is made, a part at a time.
  class Job {
   public:
    // Readable once there is a batch of text to take (kWakeBytes) or the job has ended,
    // after take() found neither (an eventfd, for the caller to wait on).
    int fd() const { return ready_fd_.get(); }
    enum class Taken { kText, kNothingYet, kEnded };
    // Appends the next part of the text (about kPartBytes) to out (kText), or says there
    // is none yet, or that the job has ended (then findings()).
    Taken take(std::string& out);
    const ListFindings& findings() const { return findings_; }
    // What ksd knows of the apps (the thread reads the kernel's side meanwhile, and makes
    // the text once it has this).
    void give(ListInput input);
    // Nobody takes the text any more (the client has gone): the thread stops.
    void abandon();
    // Text made and not taken yet (tests).
    std::size_t queued_bytes() {
      std::lock_guard lock(mutex_);
      return queued_bytes_;
    }

   private:
    friend class ListMaker;
    explicit Job(UniqueFd ready_fd) : ready_fd_(std::move(ready_fd)) {}
    // The thread's side: waits for give(); false when the job was abandoned.
    bool wait_for_input();
    // The thread's side: queues a part of the text (waiting while kMaxQueuedBytes are not
    // taken yet); false when the job was abandoned.
    bool put(std::string&& part);
    void end();

    ListInput input_;  // the thread's once given
    UniqueFd ready_fd_;
    std::mutex mutex_;
    std::condition_variable taken_;  // (or given, or abandoned)
    std::deque<std::string> parts_;  // text made, not taken yet
    std::size_t queued_bytes_ = 0;
    bool given_ = false, ended_ = false, abandoned_ = false;
    bool thread_waits_ = false;  // put() waits for the caller to take parts
    bool caller_waits_ = false;  // take() found nothing: fd() is to be set
    ListFindings findings_;      // the thread's until ended_, then the loop's
  };

  explicit ListMaker(ReadKernelSide read_kernel_side)
      : read_kernel_side_(std::move(read_kernel_side)) {}
  ~ListMaker();  // ends the threads (a list being made stops after its next part)
  ListMaker(const ListMaker&) = delete;
  ListMaker& operator=(const ListMaker&) = delete;

  // Queues a list; a thread takes it up at once (up to kThreads lists are made at the same
  // time) and reads the kernel's side while the caller copies its own (Job::give). Throws
  // ks::Error when no eventfd or thread can be had.
  std::shared_ptr<Job> start();

  // At most this many lists are made at once, each by a thread; more wait their turn. A
  // thread ends once no list waits: none is left behind at SCHED_IDLE, where after a
  // SIGKILL it would hold ksd's files (its single-instance lock) until a busy machine
  // gives it the CPU to exit.
  static constexpr std::size_t kThreads = 4;
  // The text goes over in parts of about this size (half an admin socket fragment: the
  // server fills a fragment with two parts and carries little over).
  static constexpr std::size_t kPartBytes = 32 * 1024;
  // Text a list may have made ahead of its client (more: the thread waits).
  static constexpr std::size_t kMaxQueuedBytes = 256 * 1024;
  // A caller that waits is woken once this much is made (or the list has ended).
  static constexpr std::size_t kWakeBytes = kMaxQueuedBytes / 2;

 private:
  struct Worker {
    std::thread thread;
    bool finished = false;  // run() has returned (the thread is to be joined)
  };
  void run(Worker& worker);
  void join_finished();  // (with mutex_ held)
  // The list's text, put part by part; its length.
  std::size_t make(Job& job);
  static constexpr std::size_t kTrimAfterBytes = 1024 * 1024;  // (see run)

  const ReadKernelSide read_kernel_side_;
  std::mutex mutex_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::shared_ptr<Job>> making_;  // taken up by a thread (ended at ~ListMaker)
  std::list<Worker> workers_;                 // (a list: each keeps its place for run())
  std::size_t running_ = 0;                   // workers not finished
  bool stopping_ = false;
};

}  // namespace ks
