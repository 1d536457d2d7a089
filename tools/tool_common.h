/* Shared by the programs: signals as a readable fd. */
#ifndef MS_TOOL_COMMON_H
#define MS_TOOL_COMMON_H

#include <signal.h>
#include <sys/signalfd.h>

/* Ignore SIGPIPE (a closed peer is an error code, not a death), block
 * SIGINT, SIGTERM and `extra` (0 for none), and return a non-blocking
 * signalfd for them to watch on the loop. */
static inline int tool_signal_fd(int extra) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (extra)
    sigaddset(&mask, extra);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  return signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* The signals tool_signal_fd blocked, for a child process to unblock. */
static inline void tool_unblock_signals(void) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_UNBLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_DFL);
}

#endif
