# Sourced by the GPU scripts that compare variants or libraries round by round. in_round_order <round> <word>...:
# the words one a line, reversed in even rounds, so that with an even number of rounds each is as often first as
# last (in one call, 2026-12-03, the library run first at a point was 3-9 % slower with code the two shared).
in_round_order() {
  local round="$1"; shift
  local words=("$@") i
  if [ $((round % 2)) = 0 ]; then for ((i = ${#words[@]} - 1; i >= 0; --i)); do echo "${words[i]}"; done
  else for ((i = 0; i < ${#words[@]}; ++i)); do echo "${words[i]}"; done; fi
}
