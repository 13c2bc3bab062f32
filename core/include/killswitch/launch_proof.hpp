// What ksrun proves about its own process before it execs the command.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace ks {

// Throws ks::Error saying what does not hold, given ksd's launch reply:
//  1. this process is in the cgroup ksd created for it;
//  2. enforcement judges this process's own sockets: a connected UDP send to loopback
//     KS_CANARY_PORT is dropped by egress (EPERM) and a TCP connect() to it is refused
//     by the connect hooks with KS_CANARY_ERRNO — a functional proof that needs no
//     privilege (IPv4, and IPv6 where the host has it);
//  3. with CAP_NET_ADMIN (BPF_PROG_QUERY needs it), every program ksd reported is in the
//     effective program list of this cgroup. Without it, ksd ran the same query before
//     answering.
void prove_protection(const nlohmann::json& launch_reply);

// The functional part of the proof on its own (step 2 above). Throws ks::Error.
void prove_canaries();

// True when this process may run BPF_PROG_QUERY (CAP_NET_ADMIN effective).
bool can_query_programs();

// Removes CAP_NET_RAW and CAP_NET_ADMIN from the bounding, ambient, inheritable,
// permitted and effective sets: with them a process could open packet sockets (which
// no inet hook sees) or detach programs. Throws ks::Error if a held one cannot go.
void drop_bypass_capabilities();

}  // namespace ks
