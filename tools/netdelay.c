// A fixed one-way delay on a link, for tools/cluster.sh where the kernel has no netem (the test
// machines' kernel is built without sch_netem, but with nf_tables and NFQUEUE): nftables hands
// every packet a host sends on its link to netfilter queue Q; this process releases each one
// (NF_ACCEPT) DELAY_US microseconds after it arrived, in arrival order. Only the packet's
// metadata is copied to user space. Run one per host namespace (netfilter queues are per
// namespace). Build: cc -O2 -o netdelay tools/netdelay.c -lnetfilter_queue
// usage: netdelay QUEUE DELAY_US
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

enum { kCap = 1 << 18 };  // packets in flight (a ring; the queue itself holds at most this many)

static uint32_t ids[kCap];
static int64_t due[kCap];
static size_t head, tail;  // ring of (id, due time), in arrival order
static int64_t delay_ns;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int on_packet(struct nfq_q_handle* q, struct nfgenmsg* m, struct nfq_data* d, void* arg) {
  (void)m, (void)arg;
  struct nfqnl_msg_packet_hdr* h = nfq_get_msg_packet_hdr(d);
  if (!h) return 0;
  const uint32_t id = ntohl(h->packet_id);
  if (tail - head == kCap) return nfq_set_verdict(q, id, NF_ACCEPT, 0, NULL);  // full: no delay
  ids[tail % kCap] = id;
  due[tail % kCap] = now_ns() + delay_ns;
  ++tail;
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: netdelay QUEUE DELAY_US\n");
    return 2;
  }
  const int qnum = atoi(argv[1]);
  delay_ns = (int64_t)(atof(argv[2]) * 1000);
  struct nfq_handle* h = nfq_open();
  if (!h) {
    perror("netdelay: nfq_open");
    return 1;
  }
  struct nfq_q_handle* q = nfq_create_queue(h, (uint16_t)qnum, on_packet, NULL);
  if (!q) {
    perror("netdelay: nfq_create_queue");
    return 1;
  }
  if (nfq_set_mode(q, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(q, kCap) < 0) {
    perror("netdelay: queue settings");
    return 1;
  }
  const int fd = nfq_fd(h);
  int rcvbuf = 64 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  char buf[1 << 16];
  for (;;) {
    int64_t t = now_ns();
    while (head != tail && due[head % kCap] <= t) {
      nfq_set_verdict(q, ids[head % kCap], NF_ACCEPT, 0, NULL);
      ++head;
    }
    struct timespec wait = {0, 0}, *w = NULL;  // until the head is due; none: until a packet
    if (head != tail) {
      const int64_t dt = due[head % kCap] - t;
      wait.tv_sec = dt / 1000000000;
      wait.tv_nsec = dt % 1000000000;
      w = &wait;
    }
    struct pollfd p = {fd, POLLIN, 0};
    const int r = ppoll(&p, 1, w, NULL);
    if (r < 0 && errno != EINTR) {
      perror("netdelay: poll");
      return 1;
    }
    if (r > 0) {
      const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) nfq_handle_packet(h, buf, (int)n);
    }
  }
}
