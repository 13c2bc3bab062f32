// Helping a user who mistyped a command line: the closest known word, and where the first
// word that is not an option begins. Pure; ksrun and ksctl use it before their parser
// (CLI11) would either run a typo as the command or say only "a subcommand is required".
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ks {

// The candidate closest to `word` (edit distance at most 2, and less than its length),
// or nullopt when none is that close.
std::optional<std::string> closest_word(std::string_view word,
                                        std::span<const std::string_view> candidates);

// An option word that is not one of `known` ("--prfile"), before the first non-option
// word and before "--"; options in `with_value` take the next word as their value unless
// written "--opt=value". nullopt when every option word is known.
std::optional<std::string> first_unknown_option(std::span<const std::string> args,
                                                std::span<const std::string_view> known,
                                                std::span<const std::string_view> with_value);

// The first word that is not an option nor an option's value (the subcommand or command),
// or nullopt. Same conventions as above.
std::optional<std::string> first_word(std::span<const std::string> args,
                                      std::span<const std::string_view> with_value);

}  // namespace ks
