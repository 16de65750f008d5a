// An event loop of the kind libevent or a C server has: one epoll over an eventfd, a periodic
// timerfd, a socket pair and a signalfd, plus the timerfd and signalfd calls themselves
// (settime/gettime, absolute times, reads, errors). Prints what it sees, in an order that does
// not depend on timing; the test compares with the native run.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static void show(const char *what, long r) {
  if (r < 0) printf("%-44s -1 errno %d\n", what, errno);
  else printf("%-44s %ld\n", what, r);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int ev = eventfd(0, EFD_NONBLOCK);
  int tf = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  sigaddset(&mask, SIGUSR2);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sf = signalfd(-1, &mask, SFD_NONBLOCK);
  show("descriptors made", ep >= 0 && ev >= 0 && tf >= 0 && sf >= 0);

  uint64_t n;
  show("timerfd read, not armed (EAGAIN)", read(tf, &n, 8));
  show("timerfd read into 4 bytes (EINVAL)", read(tf, &n, 4));
  struct itimerspec it = {{0, 10 * 1000 * 1000}, {0, 10 * 1000 * 1000}};
  show("timerfd_settime periodic 10 ms", timerfd_settime(tf, 0, &it, NULL));
  struct itimerspec cur;
  timerfd_gettime(tf, &cur);
  printf("gettime: interval %ld ns, armed %d\n", cur.it_interval.tv_nsec, cur.it_value.tv_sec > 0 || cur.it_value.tv_nsec > 0);

  const char *names[] = {"eventfd", "timerfd", "socket", "signalfd"};
  int fds[] = {ev, tf, sv[0], sf};
  for (int i = 0; i < 4; i++) {
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
  }
  // Make every source fire once: the eventfd and the socket now, a signal now, the timer soon.
  uint64_t one = 5;
  write(ev, &one, 8);
  write(sv[1], "ping", 4);
  raise(SIGUSR1);
  kill(getpid(), SIGUSR2);
  int seen[4] = {0}, ticks = 0, rounds = 0;
  while ((!seen[0] || !seen[1] || !seen[2] || !seen[3] || ticks < 3) && rounds++ < 100) {
    struct epoll_event out[4];
    int k = epoll_wait(ep, out, 4, 1000);
    for (int j = 0; j < k; j++) {
      int i = (int)out[j].data.u32;
      if (i == 0) {
        read(ev, &n, 8);
        if (!seen[0]) printf("eventfd: %llu\n", (unsigned long long)n);
      } else if (i == 1) {
        read(tf, &n, 8);
        ticks += (int)n;
      } else if (i == 2) {
        char b[8] = {0};
        read(sv[0], b, sizeof b);
        if (!seen[2]) printf("socket: %s\n", b);
      } else {
        struct signalfd_siginfo si;
        while (read(sf, &si, sizeof si) == sizeof si)
          printf("signalfd: signal %u, code %d, from this process %d\n", si.ssi_signo, si.ssi_code,
                 si.ssi_pid == (uint32_t)getpid());
      }
      seen[i] = 1;
    }
  }
  printf("all sources seen %d, at least 3 timer ticks %d\n", seen[0] && seen[1] && seen[2] && seen[3], ticks >= 3);

  // Disarm; an absolute one-shot in the past fires at once.
  struct itimerspec off = {{0, 0}, {0, 0}};
  show("disarm", timerfd_settime(tf, 0, &off, &cur));
  printf("old setting: interval %ld ns\n", cur.it_interval.tv_nsec);
  read(tf, &n, 8);
  timerfd_gettime(tf, &cur);
  printf("disarmed: %d\n", cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0);
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  struct itimerspec past = {{0, 0}, {now.tv_sec > 0 ? now.tv_sec - 1 : 0, 1}};
  show("absolute time in the past", timerfd_settime(tf, TFD_TIMER_ABSTIME, &past, NULL));
  usleep(1000);
  show("read: fired at once", read(tf, &n, 8));
  printf("expirations %llu\n", (unsigned long long)n);

  // A blocking timerfd read waits for the expiry.
  int tb = timerfd_create(CLOCK_REALTIME, 0);
  struct itimerspec soon = {{0, 0}, {0, 20 * 1000 * 1000}};
  timerfd_settime(tb, 0, &soon, NULL);
  show("blocking read until the expiry", read(tb, &n, 8));

  // signalfd: an empty queue, then a changed mask.
  struct signalfd_siginfo si;
  show("signalfd read, nothing pending (EAGAIN)", read(sf, &si, sizeof si));
  show("signalfd read into a short buffer (EINVAL)", read(sf, &si, 8));
  sigset_t only2;
  sigemptyset(&only2);
  sigaddset(&only2, SIGUSR2);
  show("signalfd: new mask on the same descriptor", signalfd(sf, &only2, 0) == sf);
  raise(SIGUSR1);
  show("SIGUSR1 no longer in the mask (EAGAIN)", read(sf, &si, sizeof si));
  sigset_t pending;
  sigpending(&pending);
  printf("SIGUSR1 still pending %d\n", sigismember(&pending, SIGUSR1));
  show("timerfd_create bad clock", timerfd_create(12345, 0));
  return 0;
}
