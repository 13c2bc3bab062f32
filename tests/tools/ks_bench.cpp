// ks-bench: the measuring helpers of bench/run.sh (not a test, not installed).
//
//   attach-empty CGROUP PIN [--hook egress|ingress|sock_create|connect4|sendmsg4]
//                                load an empty program (return 1) for the hook (default
//                                cgroup_skb egress), attach it to CGROUP as a bpf_link and pin
//                                the link at PIN; prints {"prog_id":N}. The baseline of the
//                                per-packet cost: the same hook, the same kernel overhead, no
//                                work; on all the hooks, the floor of the send and connect rates
//   attach-floor CGROUP PIN --ifindex N [--count]
//                                the same for the floor: the least a program must do to keep
//                                the kill switch on the pass path (is the mark ours, is the
//                                interface the tunnel N, compared as constants), counting
//                                nothing; it passes everything (it only measures). --count:
//                                the floor of a pass path that counts every packet exactly
//                                per app: packets and bytes in a 64-byte row per CPU and app
//                                slot (ours' layout, without its tunnel check)
//   prog-stats ID...             run_cnt and run_time_ns of programs (kernel.bpf_stats_enabled)
//   test-run ID... --ifindex N --mark M [--repeat R] [--rounds K]
//                                BPF_PROG_TEST_RUN of cgroup_skb programs on one 64-byte UDP
//                                packet with that output interface and mark, R runs in a row
//                                (warm caches), K rounds with the programs' order alternating;
//                                prints per program the median of the rounds' ns per run and
//                                the return value
//   launch N [--gap-ms G] -- CMD ARGS... [::: CMD ARGS...]...
//                                fork+exec+wait CMD N times (several: in turn, N rounds);
//                                per-run wall time percentiles (µs; lists for several)
//   sockets N --ready-file F     open N UDP sockets, create F, sleep until killed
//   apps DIR N                   N cgroups DIR/bench-I.scope, each with one sleeping process
//                                (a fork of this one, so thousands start in seconds); exits
//                                once all are in place (the apps stay; cgroup.kill ends them)
//   cgroup-moves DIR N           a new process into a fresh cgroup DIR/move-I, N times 100 ms
//                                apart, two ways: written into cgroup.procs (what ksrun and
//                                systemd do) and born there (clone3 CLONE_INTO_CGROUP); avg ms
//   connect-rate --dst IP:PORT --count N [--mark M]  TCP connect()+close() N times; rate
//   send-rate --dst IP:PORT --count N [--mark M]  UDP sendto() N times (errors counted); rate
//   admin-latency --socket S --count N [--while-listing]
//                                ksd's answer time for N status and N short events requests
//                                (p50/p99/max µs), with a thread asking for the list meanwhile
//
// Every subcommand prints one JSON line.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch_abi.h"

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the calling thread: what an operation costs this thread, in the kernel
// (and BPF) included, without the waiting that wall time adds on a busy machine.
double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

sockaddr_in parse_v4(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) throw ks::Error("destination must be IP:PORT: " + text);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1))));
  if (::inet_pton(AF_INET, text.substr(0, colon).c_str(), &a.sin_addr) != 1)
    throw ks::Error("not an IPv4 address: " + text);
  return a;
}

bpf_insn insn(std::uint8_t code, std::uint8_t dst, std::uint8_t src, std::int16_t off,
              std::int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

// r0 = 1 (pass); exit
std::vector<bpf_insn> empty_program() {
  return {insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1),
          insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)};
}

// The pass path's floor: mark tag and interface against constants, then pass (either way).
// counters_fd >= 0: count the packet first, exactly, in that array (floor_counters) at the
// row of this CPU and the mark's app slot, as ours does (one cache line per CPU and slot, so
// one place in memory per packet), without ours' check of the row's profile and tunnels.
std::vector<bpf_insn> floor_program(std::uint32_t tunnel_ifindex, int counters_fd = -1) {
  const auto mark_off = static_cast<std::int16_t>(offsetof(__sk_buff, mark));
  const auto ifindex_off = static_cast<std::int16_t>(offsetof(__sk_buff, ifindex));
  const auto len_off = static_cast<std::int16_t>(offsetof(__sk_buff, len));
  std::vector<bpf_insn> p = {
      insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0),
      insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_1, mark_off, 0),
      insn(BPF_ALU | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_7, 0, 0),
      insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_3, 0, 0, static_cast<std::int32_t>(KS_MARK_TAG_MASK)),
      insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_3, 0, 0 /* to pass */,
           static_cast<std::int32_t>(KS_MARK_BASE)),
      insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_3, BPF_REG_1, ifindex_off, 0),
      insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_3, 0, 0 /* to pass */,
           static_cast<std::int32_t>(tunnel_ifindex)),
  };
  if (counters_fd >= 0) {
    const std::vector<bpf_insn> count = {
        insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_smp_processor_id),
        insn(BPF_ALU64 | BPF_MUL | BPF_K, BPF_REG_0, 0, 0, KS_MAX_APP_SLOTS),
        insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_7, 0, 0, KS_MARK_SLOT_MASK),
        insn(BPF_ALU | BPF_RSH | BPF_K, BPF_REG_7, 0, 0, KS_MARK_SLOT_SHIFT),
        insn(BPF_ALU64 | BPF_ADD | BPF_X, BPF_REG_0, BPF_REG_7, 0, 0),
        insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -4, 0),
        insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0),
        insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4),
        insn(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, counters_fd),
        insn(0, 0, 0, 0, 0),
        insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
        insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0 /* to pass */, 0),
        insn(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_0, 0, 0),
        insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_1, 0, 0, 1),
        insn(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_1, 0, 0),
        insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_6, len_off, 0),
        insn(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_0, 8, 0),
        insn(BPF_ALU64 | BPF_ADD | BPF_X, BPF_REG_1, BPF_REG_2, 0, 0),
        insn(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_1, 8, 0),
    };
    p.insert(p.end(), count.begin(), count.end());
  }
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1));  // pass:
  p.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  // Every "to pass" jump goes to the last two instructions.
  const auto pass = static_cast<std::int16_t>(p.size() - 2);
  for (std::size_t i = 0; i < p.size(); ++i) {
    const bool cond_jump = BPF_CLASS(p[i].code) == BPF_JMP && BPF_OP(p[i].code) != BPF_CALL &&
                           BPF_OP(p[i].code) != BPF_EXIT;
    if (cond_jump) p[i].off = static_cast<std::int16_t>(pass - static_cast<std::int16_t>(i) - 1);
  }
  return p;
}

// The counting floor's rows: like ks_fast_slots, KS_MAX_APP_SLOTS 64-byte rows per possible
// CPU (packets, bytes, unused), in one array. The program keeps it alive once loaded.
ks::UniqueFd floor_counters() {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) throw ks::Error("cannot count the possible CPUs");
  ks::UniqueFd fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, "ks_bench_count", sizeof(__u32), 64,
                                 static_cast<__u32>(cpus) * KS_MAX_APP_SLOTS, nullptr));
  if (!fd) ks::throw_errno("creating the counting floor's array");
  return fd;
}

// Where an empty program can be attached: ksd's hooks that a send or a connect runs.
struct Hook {
  const char* name;
  bpf_prog_type prog_type;
  bpf_attach_type attach_type;
};
constexpr Hook kHooks[] = {
    {"egress", BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS},
    {"ingress", BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_INGRESS},
    {"sock_create", BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_CREATE},
    {"connect4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT},
    {"sendmsg4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP4_SENDMSG},
};

// hook: one of kHooks (the floor programs read an skb: egress only).
int attach_program(const char* name, const std::vector<bpf_insn>& insns, const std::string& cgroup,
                   const std::string& pin, const std::string& hook_name = "egress") {
  const Hook* hook = nullptr;
  for (const Hook& h : kHooks)
    if (hook_name == h.name) hook = &h;
  if (!hook) throw ks::Error("unknown hook " + hook_name);
  const bpf_attach_type type = hook->attach_type;
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = type);
  ks::UniqueFd prog(bpf_prog_load(hook->prog_type, name, "GPL", insns.data(), insns.size(), &opts));
  if (!prog) ks::throw_errno(std::string("loading ") + name);
  ks::UniqueFd cg = ks::open_cgroup(cgroup);
  ks::UniqueFd link(bpf_link_create(prog.get(), cg.get(), type, nullptr));
  if (!link) ks::throw_errno(std::string("attaching ") + name);
  if (bpf_obj_pin(link.get(), pin.c_str()) != 0) ks::throw_errno("pinning " + pin);
  bpf_prog_info info{};
  __u32 len = sizeof(info);
  bpf_obj_get_info_by_fd(prog.get(), &info, &len);
  std::cout << nlohmann::json{{"prog_id", info.id}}.dump() << "\n";
  return 0;
}

int prog_stats(const std::vector<unsigned>& ids) {
  nlohmann::json out = nlohmann::json::object();
  for (unsigned id : ids) {
    ks::UniqueFd fd(bpf_prog_get_fd_by_id(id));
    if (!fd) ks::throw_errno("program " + std::to_string(id));
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) ks::throw_errno("prog info");
    out[std::to_string(id)] = {{"run_cnt", info.run_cnt}, {"run_time_ns", info.run_time_ns}};
  }
  std::cout << out.dump() << "\n";
  return 0;
}

// One IPv4/UDP packet with 36 bytes of payload (64 bytes of IP), behind an Ethernet header
// (test runs of cgroup_skb programs take the frame from L2 and start the program at L3).
std::vector<std::uint8_t> udp_frame() {
  std::vector<std::uint8_t> f(14 + 64, 0);
  f[12] = 0x08;  // ETH_P_IP
  std::uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;  // version 4, 20-byte header
  ip[3] = 64;    // total length
  ip[8] = 64;    // TTL
  ip[9] = IPPROTO_UDP;
  const std::uint8_t src[4] = {10, 99, 0, 2}, dst[4] = {10, 99, 0, 1};
  std::memcpy(ip + 12, src, 4);
  std::memcpy(ip + 16, dst, 4);
  ip[20] = 0x9c;  // source port 40000
  ip[21] = 0x40;
  ip[23] = 9;   // destination port 9
  ip[25] = 44;  // UDP length
  return f;
}

int test_run(const std::vector<unsigned>& ids, unsigned ifindex, unsigned mark, unsigned repeat,
             unsigned rounds) {
  std::vector<ks::UniqueFd> fds;
  for (unsigned id : ids) {
    fds.emplace_back(bpf_prog_get_fd_by_id(id));
    if (!fds.back()) ks::throw_errno("program " + std::to_string(id));
  }
  auto frame = udp_frame();
  std::vector<std::vector<double>> ns(ids.size());
  std::vector<int> retval(ids.size(), -1);
  for (unsigned r = 0; r < rounds; ++r) {
    for (std::size_t k = 0; k < ids.size(); ++k) {
      // Round r runs the programs forwards, round r+1 backwards: none always runs first.
      std::size_t i = r % 2 == 0 ? k : ids.size() - 1 - k;
      __sk_buff ctx{};
      ctx.mark = mark;
      ctx.ifindex = ifindex;
      LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
                  .data_size_in = static_cast<__u32>(frame.size()), .ctx_in = &ctx,
                  .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(repeat));
      if (bpf_prog_test_run_opts(fds[i].get(), &opts) != 0)
        ks::throw_errno("test run of program " + std::to_string(ids[i]));
      ns[i].push_back(opts.duration);
      retval[i] = static_cast<int>(opts.retval);
    }
  }
  nlohmann::json out = nlohmann::json::object();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    std::sort(ns[i].begin(), ns[i].end());
    out[std::to_string(ids[i])] = {{"ns", ns[i][ns[i].size() / 2]}, {"retval", retval[i]}};
  }
  std::cout << out.dump() << "\n";
  return 0;
}

// gap_ms: an untimed pause before each launch (apps started by a person, one at a time:
// what a launcher does in the background between launches has finished). Several commands
// (separated by ":::") are launched in turn, one of each per round, so that the machine's
// drift over the run (tens of percent here) falls on all of them alike; then the
// percentiles are lists, one entry per command.
int launch(unsigned n, const std::vector<std::string>& command, unsigned gap_ms) {
  std::vector<std::vector<std::string>> commands(1);
  for (const auto& arg : command) {
    if (arg == ":::") {
      commands.emplace_back();
    } else {
      commands.back().push_back(arg);
    }
  }
  std::vector<std::vector<double>> us(commands.size());
  int failures = 0;
  for (unsigned i = 0; i < n; ++i) {
    for (std::size_t c = 0; c < commands.size(); ++c) {
      std::vector<std::string> copy = commands[c];
      std::vector<char*> argv;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (gap_ms > 0) ::usleep(gap_ms * 1000);
      auto t0 = Clock::now();
      pid_t pid = ::fork();
      if (pid == 0) {
        ::execvp(argv[0], argv.data());
        ::_exit(127);
      }
      int status = 0;
      ::waitpid(pid, &status, 0);
      us[c].push_back(seconds_since(t0) * 1e6);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
    }
  }
  nlohmann::json p50 = nlohmann::json::array(), p90 = nlohmann::json::array(),
                 min = nlohmann::json::array();
  for (auto& v : us) {
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) {
      return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
    };
    p50.push_back(pct(0.5));
    p90.push_back(pct(0.9));
    min.push_back(v.front());
  }
  nlohmann::json out{{"runs", n}, {"failures", failures}};
  if (commands.size() == 1) {
    out["p50_us"] = p50[0], out["p90_us"] = p90[0], out["min_us"] = min[0];
  } else {
    out["p50_us"] = p50, out["p90_us"] = p90, out["min_us"] = min;
  }
  std::cout << out.dump() << "\n";
  return failures ? 1 : 0;
}

// ksd's answer time for small requests (status, a short events query), n of each, with
// or without a thread that asks for the list over and over meanwhile: whether a big reply
// holds up everyone else.
int admin_latency(const std::string& socket_path, unsigned n, bool while_listing) {
  std::atomic<bool> done{false};
  std::atomic<unsigned> lists{0};
  std::string list_error;
  std::thread lister;
  if (while_listing)
    lister = std::thread([&] {
      try {
        while (!done) {
          ks::UniqueFd fd = ks::ipc::connect_to(socket_path);
          ks::ipc::send_message(fd.get(), {{"op", "list"}});
          if (ks::ipc::receive_text(fd.get(), 10000).size() < 10) throw ks::Error("short list");
          ++lists;
        }
      } catch (const std::exception& e) {
        list_error = e.what();
      }
    });
  // Let the first list begin.
  if (while_listing) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::vector<double> status_us, events_us;
  for (unsigned i = 0; i < n; ++i) {
    for (auto [request, us] :
         {std::pair{nlohmann::json{{"op", "status"}}, &status_us},
          std::pair{nlohmann::json{{"op", "events"}, {"limit", 10}}, &events_us}}) {
      auto t0 = Clock::now();
      if (!ks::ipc::call(socket_path, request).value("ok", false)) throw ks::Error("not ok");
      us->push_back(seconds_since(t0) * 1e6);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  done = true;
  if (lister.joinable()) lister.join();
  if (!list_error.empty()) throw ks::Error("list: " + list_error);
  auto pct = [](std::vector<double>& us, double p) {
    std::sort(us.begin(), us.end());
    return us[static_cast<std::size_t>(p * static_cast<double>(us.size() - 1))];
  };
  std::cout << nlohmann::json{{"requests", n},
                              {"lists", lists.load()},
                              {"status_p50_us", pct(status_us, 0.5)},
                              {"status_p99_us", pct(status_us, 0.99)},
                              {"status_max_us", status_us.back()},
                              {"events_p50_us", pct(events_us, 0.5)},
                              {"events_p99_us", pct(events_us, 0.99)},
                              {"events_max_us", events_us.back()}}
                   .dump()
            << "\n";
  return 0;
}

volatile std::sig_atomic_t stop = 0;

int sockets(unsigned n, const std::string& ready_file) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max < n + 64)
    throw ks::Error("RLIMIT_NOFILE hard limit " + std::to_string(rl.rlim_max) + " is too low for " +
                    std::to_string(n) + " sockets (prlimit --nofile=...)");
  rl.rlim_cur = rl.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ks::throw_errno("RLIMIT_NOFILE");
  std::vector<int> fds;
  fds.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) ks::throw_errno("socket " + std::to_string(i));
    fds.push_back(fd);
  }
  std::signal(SIGTERM, [](int) { stop = 1; });
  std::ofstream(ready_file) << ::getpid() << "\n";
  while (!stop) ::pause();
  std::cout << nlohmann::json{{"sockets", n}}.dump() << "\n";
  return 0;
}

int apps(const std::string& dir, unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
    const std::string cg = dir + "/bench-" + std::to_string(i) + ".scope";
    ks::ensure_cgroup_dir(cg);
    pid_t pid = ::fork();
    if (pid < 0) ks::throw_errno("fork");
    if (pid == 0) {
      std::ofstream(cg + "/cgroup.procs") << ::getpid() << "\n";
      for (;;) ::pause();
    }
  }
  // Every child moved itself before the parent returns: wait until each cgroup has it.
  for (unsigned i = 0; i < n; ++i)
    while (!ks::cgroup_populated(dir + "/bench-" + std::to_string(i) + ".scope")) ::usleep(1000);
  std::cout << nlohmann::json{{"apps", n}}.dump() << "\n";
  return 0;
}

// Fork and wait, the child moving itself into `cg` (by_clone: born there); ms.
double one_move(const std::string& cg, bool by_clone) {
  const auto t0 = Clock::now();
  pid_t pid;
  if (!by_clone) {
    pid = ::fork();
    if (pid == 0) {
      std::ofstream(cg + "/cgroup.procs") << "0\n";
      ::_exit(0);
    }
  } else {
    ks::UniqueFd dir(::open(cg.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) ks::throw_errno("open " + cg);
    clone_args args{};
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<std::uint64_t>(dir.get());
    pid = static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof(args)));
    if (pid == 0) ::_exit(0);
  }
  if (pid < 0) ks::throw_errno("fork");
  int status = 0;
  ::waitpid(pid, &status, 0);
  return seconds_since(t0) * 1e3;
}

// One launch at a time, the way a person starts apps: does the move into the cgroup wait
// for an RCU grace period (a write to cgroup.procs takes the threadgroup rwsem for
// writing) or not (a process born in its cgroup takes it for reading only)?
int cgroup_moves(const std::string& dir, unsigned n) {
  double written = 0, born = 0;
  for (unsigned i = 0; i < n; ++i) {
    for (bool by_clone : {false, true}) {
      const std::string cg = dir + "/move-" + std::to_string(i) + (by_clone ? "-born" : "");
      ks::ensure_cgroup_dir(cg);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      (by_clone ? born : written) += one_move(cg, by_clone);
      ::rmdir(cg.c_str());
    }
  }
  std::cout << nlohmann::json{{"moves", n},
                              {"written_avg_ms", written / n},
                              {"born_avg_ms", born / n}}
                   .dump()
            << "\n";
  return 0;
}

// SO_MARK a socket (mark 0: leave it). An unprotected socket with a protected socket's mark
// takes the same policy rules without any program: what routing alone adds (needs
// CAP_NET_ADMIN).
void set_mark(int fd, unsigned mark) {
  if (mark != 0 && ::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
    throw ks::Error(std::string("SO_MARK: ") + std::strerror(errno));
}

int connect_rate(const std::string& dst, unsigned n, unsigned mark) {
  sockaddr_in a = parse_v4(dst);
  unsigned ok = 0;
  auto t0 = Clock::now();
  const double cpu0 = thread_cpu_seconds();
  for (unsigned i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    set_mark(fd, mark);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) ++ok;
    ::close(fd);
  }
  const double cpu = thread_cpu_seconds() - cpu0;
  double s = seconds_since(t0);
  std::cout << nlohmann::json{{"attempts", n},
                              {"connected", ok},
                              {"seconds", s},
                              {"per_second", static_cast<double>(n) / s},
                              {"cpu_ns_per_op", cpu * 1e9 / n}}
                   .dump()
            << "\n";
  return ok == n ? 0 : 1;
}

int send_rate(const std::string& dst, unsigned n, unsigned mark) {
  sockaddr_in a = parse_v4(dst);
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  set_mark(fd, mark);
  unsigned ok = 0;
  char payload[32] = {};
  auto t0 = Clock::now();
  const double cpu0 = thread_cpu_seconds();
  for (unsigned i = 0; i < n; ++i)
    if (::sendto(fd, payload, sizeof(payload), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)) >= 0)
      ++ok;
  const double cpu = thread_cpu_seconds() - cpu0;
  double s = seconds_since(t0);
  ::close(fd);
  std::cout << nlohmann::json{{"attempts", n},
                              {"sent", ok},
                              {"seconds", s},
                              {"per_second", static_cast<double>(n) / s},
                              {"cpu_ns_per_op", cpu * 1e9 / n}}
                   .dump()
            << "\n";
  return ok == n ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ks-bench: measuring helpers for bench/run.sh"};
  app.require_subcommand(1);
  std::string cgroup, pin, dst, ready_file;
  std::vector<unsigned> ids;
  unsigned n = 0;
  std::vector<std::string> command;

  auto* ae = app.add_subcommand("attach-empty", "pin an empty cgroup_skb egress program's link");
  ae->add_option("cgroup", cgroup)->required();
  ae->add_option("pin", pin)->required();
  std::string empty_hook = "egress";
  ae->add_option("--hook", empty_hook,
                 "egress (default), ingress, sock_create, connect4, sendmsg4");
  auto* af = app.add_subcommand("attach-floor", "pin the pass path's floor program's link");
  af->add_option("cgroup", cgroup)->required();
  af->add_option("pin", pin)->required();
  unsigned floor_ifindex = 0;
  af->add_option("--ifindex", floor_ifindex)->required();
  bool floor_count = false;
  af->add_flag("--count", floor_count, "count each packet exactly in a row per CPU and app slot");
  auto* ps = app.add_subcommand("prog-stats", "run_cnt/run_time_ns of programs");
  ps->add_option("ids", ids)->required();
  auto* tr = app.add_subcommand("test-run", "BPF_PROG_TEST_RUN of cgroup_skb programs, warm");
  tr->add_option("ids", ids)->required();
  unsigned ifindex = 0, tr_mark = 0, repeat = 100000, rounds = 9;
  tr->add_option("--ifindex", ifindex)->required();
  tr->add_option("--mark", tr_mark)->required();
  tr->add_option("--repeat", repeat);
  tr->add_option("--rounds", rounds);
  auto* la = app.add_subcommand("launch", "fork+exec+wait a command N times");
  la->add_option("n", n)->required();
  la->add_option("command", command)->required();
  unsigned gap_ms = 0;
  la->add_option("--gap-ms", gap_ms, "untimed pause before each launch");
  auto* so = app.add_subcommand("sockets", "hold N UDP sockets");
  so->add_option("n", n)->required();
  so->add_option("--ready-file", ready_file)->required();
  auto* ap = app.add_subcommand("apps", "N cgroups with a sleeping process each");
  ap->add_option("dir", cgroup)->required();
  ap->add_option("n", n)->required();
  auto* cm = app.add_subcommand("cgroup-moves", "a process into a fresh cgroup, two ways");
  cm->add_option("dir", cgroup)->required();
  cm->add_option("n", n)->required();
  unsigned mark = 0;
  auto* cr = app.add_subcommand("connect-rate", "TCP connect+close loop");
  cr->add_option("--dst", dst)->required();
  cr->add_option("--count", n)->required();
  cr->add_option("--mark", mark, "SO_MARK each socket first (0: leave it)");
  auto* sr = app.add_subcommand("send-rate", "UDP sendto loop");
  sr->add_option("--dst", dst)->required();
  sr->add_option("--count", n)->required();
  sr->add_option("--mark", mark, "SO_MARK the socket first (0: leave it)");
  auto* al = app.add_subcommand("admin-latency", "ksd's answer time for status and events");
  std::string socket_path;
  al->add_option("--socket", socket_path)->required();
  al->add_option("--count", n)->required();
  bool while_listing = false;
  al->add_flag("--while-listing", while_listing, "a thread asks for the list meanwhile");
  CLI11_PARSE(app, argc, argv);
  try {
    if (*ae) return attach_program("ks_bench_empty", empty_program(), cgroup, pin, empty_hook);
    if (*af) {
      if (!floor_count)
        return attach_program("ks_bench_floor", floor_program(floor_ifindex), cgroup, pin);
      ks::UniqueFd counters = floor_counters();
      return attach_program("ks_bench_floorc", floor_program(floor_ifindex, counters.get()), cgroup,
                            pin);
    }
    if (*ps) return prog_stats(ids);
    if (*tr) return test_run(ids, ifindex, tr_mark, repeat, rounds);
    if (*la) return launch(n, command, gap_ms);
    if (*so) return sockets(n, ready_file);
    if (*ap) return apps(cgroup, n);
    if (*cm) return cgroup_moves(cgroup, n);
    if (*cr) return connect_rate(dst, n, mark);
    if (*sr) return send_rate(dst, n, mark);
    if (*al) return admin_latency(socket_path, n, while_listing);
  } catch (const std::exception& e) {
    std::cerr << "ks-bench: " << e.what() << "\n";
    return 2;
  }
  return 2;
}
