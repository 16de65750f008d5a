// AF_UNIX socket pairs and select, as an event loop or a worker pool uses them: both
// directions, MSG_PEEK/MSG_DONTWAIT, message boundaries (SOCK_DGRAM, SOCK_SEQPACKET) and
// truncation, sendmsg/recvmsg with several iovecs, shutdown, EPIPE with and without SIGPIPE,
// socket options and names, fstat, FIONREAD/FIONBIO, select/pselect/poll/epoll readiness, and a
// thread blocked in recv until another sends. Prints what it sees; the test compares with the
// native run.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

static void show(const char *what, long r) {
  if (r < 0) printf("%-40s -1 errno %d\n", what, errno);
  else printf("%-40s %ld\n", what, r);
}

static int sv[2];
static void *sender(void *arg) {
  (void)arg;
  usleep(20000);
  send(sv[1], "late", 4, 0);
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  char buf[64];
  show("socketpair stream", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  show("write a->b", write(sv[0], "hello", 5));
  show("send b->a", send(sv[1], "world!", 6, 0));
  show("FIONREAD b", (ioctl(sv[1], FIONREAD, &(int){0}), ({ int n; ioctl(sv[1], FIONREAD, &n); n; })));
  show("recv b MSG_PEEK", recv(sv[1], buf, 3, MSG_PEEK));
  show("read b", read(sv[1], buf, sizeof buf));
  printf("b got %.5s\n", buf);
  show("recv a", recv(sv[0], buf, sizeof buf, 0));
  printf("a got %.6s\n", buf);
  show("recv a MSG_DONTWAIT (empty)", recv(sv[0], buf, sizeof buf, MSG_DONTWAIT));

  // select/pselect: ready only after a write; timeout 0 returns 0.
  fd_set r;
  FD_ZERO(&r);
  FD_SET(sv[0], &r);
  struct timeval tv = {0, 0};
  show("select, nothing to read", select(sv[0] + 1, &r, NULL, NULL, &tv));
  write(sv[1], "x", 1);
  FD_ZERO(&r);
  FD_SET(sv[0], &r);
  fd_set w;
  FD_ZERO(&w);
  FD_SET(sv[1], &w);
  tv = (struct timeval){1, 0};
  show("select, readable + writable", select(sv[1] + 1, &r, &w, NULL, &tv));
  printf("isset r %d w %d\n", FD_ISSET(sv[0], &r) != 0, FD_ISSET(sv[1], &w) != 0);
  struct timespec ts = {0, 30000000};
  sigset_t mask;
  sigemptyset(&mask);
  FD_ZERO(&r);
  FD_SET(sv[1], &r);
  show("pselect, 30 ms timeout", pselect(sv[1] + 1, &r, NULL, NULL, &ts, &mask));
  read(sv[0], buf, 1);

  // A thread blocked in recv until another thread sends.
  pthread_t t;
  pthread_create(&t, NULL, sender, NULL);
  memset(buf, 0, sizeof buf);
  show("recv blocking until a thread sends", recv(sv[0], buf, sizeof buf, 0));
  printf("got %s\n", buf);
  pthread_join(t, NULL);

  // poll and epoll see the socket.
  struct pollfd p = {sv[0], POLLIN | POLLOUT, 0};
  show("poll", poll(&p, 1, 0));
  printf("revents in %d out %d\n", (p.revents & POLLIN) != 0, (p.revents & POLLOUT) != 0);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 7};
  epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &ev);
  send(sv[1], "e", 1, 0);
  struct epoll_event out;
  show("epoll_wait", epoll_wait(ep, &out, 1, 1000));
  printf("epoll data %llu\n", (unsigned long long)out.data.u64);
  recv(sv[0], buf, 1, 0);

  // sendmsg/recvmsg with several iovecs.
  struct iovec iov[3] = {{"ab", 2}, {"cde", 3}, {"f", 1}};
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = 3};
  show("sendmsg 3 iovecs", sendmsg(sv[0], &m, 0));
  char x[2], y[10];
  struct iovec in[2] = {{x, 2}, {y, 10}};
  struct msghdr mr = {.msg_iov = in, .msg_iovlen = 2};
  show("recvmsg 2 iovecs", recvmsg(sv[1], &mr, 0));
  printf("iovecs %.2s|%.4s flags %d controllen %zu\n", x, y, mr.msg_flags, mr.msg_controllen);

  // Options, names, stat, FIONBIO.
  int type = 0;
  socklen_t len = sizeof type;
  show("getsockopt SO_TYPE", getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &type, &len));
  printf("type %d len %u\n", type, len);
  struct sockaddr_un sa;
  len = sizeof sa;
  show("getsockname", getsockname(sv[0], (struct sockaddr *)&sa, &len));
  printf("family %d len %u\n", sa.sun_family, len);
  struct stat st;
  fstat(sv[0], &st);
  printf("S_ISSOCK %d\n", S_ISSOCK(st.st_mode));
  int on = 1;
  show("FIONBIO", ioctl(sv[0], FIONBIO, &on));
  show("read nonblocking (empty)", read(sv[0], buf, 1));
  show("getsockname of a pipe", ({ int pp[2]; pipe(pp); getsockname(pp[0], (struct sockaddr *)&sa, &len); }));

  // shutdown: the peer sees the end of the stream; writing after it is EPIPE.
  show("shutdown a SHUT_WR", shutdown(sv[0], SHUT_WR));
  show("read b after shutdown (EOF)", read(sv[1], buf, sizeof buf));
  show("send a after SHUT_WR, MSG_NOSIGNAL", send(sv[0], "z", 1, MSG_NOSIGNAL));
  show("b can still write to a", write(sv[1], "q", 1));
  close(sv[1]);
  signal(SIGPIPE, SIG_IGN);
  show("read a after close of b", read(sv[0], buf, sizeof buf));
  show("read a at EOF", read(sv[0], buf, sizeof buf));
  close(sv[0]);

  // Datagrams keep their boundaries; a short buffer truncates one message.
  int d[2];
  show("socketpair dgram", socketpair(AF_UNIX, SOCK_DGRAM, 0, d));
  send(d[0], "one", 3, 0);
  send(d[0], "three", 5, 0);
  send(d[0], "", 0, 0);
  show("recv dgram", recv(d[1], buf, sizeof buf, 0));
  show("recv dgram into 2 bytes", recv(d[1], buf, 2, 0));
  printf("truncated %.2s\n", buf);
  show("recv empty datagram", recv(d[1], buf, sizeof buf, 0));
  show("recv dgram nothing left", recv(d[1], buf, sizeof buf, MSG_DONTWAIT));
  int s[2];
  show("socketpair seqpacket", socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s));
  send(s[1], "ab", 2, 0);
  send(s[1], "cd", 2, 0);
  show("recv seqpacket", recv(s[0], buf, sizeof buf, 0));
  show("socketpair AF_INET", socketpair(AF_INET, SOCK_STREAM, 0, s));
  return 0;
}
