/* `baton-watchdog`: the fencing watchdog of one node, a small process of its own — C library only, no
 * Swift runtime, its whole memory locked — so that it stays cheap, starts fast and is hard to take down.
 *
 * The monitor sends it a deadline after every heartbeat that reached Consul; when a deadline passes
 * without a renewal — the monitor hung, was killed or frozen, or lost Consul — it kills every process
 * of the data directory with SIGKILL and checks that none is left. It outlives the monitor: a monitor
 * that restarts finds it on its socket and carries on, so a restart does not fence a healthy primary.
 *
 * The wire format (one datagram each way; `Sources/BatonFence/WatchdogProtocol.swift` is the monitor's
 * side): requests `<sequence> L <deadline>` (lead: fence unless renewed before `deadline`, CLOCK_MONOTONIC
 * nanoseconds), `<sequence> N` (stand down), `F` (fence now), `P` (ping), `Q` (quit unless armed), `W`
 * (which postmaster would you fence?); replies `<sequence> armed|idle|refused`, to `W` with the
 * postmaster's PID after the state (0: none runs). */
#define _GNU_SOURCE
#include "CBatonFence.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: baton-watchdog --state-dir DIR --pgdata DIR --pg-bindir DIR [--track-file FILE] [--legacy-track-file FILE]\n"
    "                      [--kernel-watchdog off|automatic|required] [--kernel-watchdog-device PATH]\n"
    "Started by `baton monitor`; not meant to be run by hand.\n";

enum kernel_mode { KERNEL_OFF, KERNEL_AUTOMATIC, KERNEL_REQUIRED };
static const char *const kernel_mode_names[] = {"off", "automatic", "required"};

static struct {
    /* track_file: keepalived's FAULT is -254 (weight 1); legacy_track_file: 1 (an earlier keepalived.conf, weight 0). */
    const char *state_directory, *bin_directory, *track_file, *legacy_track_file, *device;
    char data_directory[BATON_FENCE_PATH_MAX], executable[BATON_FENCE_PATH_MAX];
    const char *data_directory_given;
    enum kernel_mode kernel;
} options = {.device = "/dev/watchdog"};

static void say(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* One line on standard error (the monitor points it at watchdog.log), with the time in UTC. */
static void say(const char *format, ...) {
    char stamp[32], text[1024], line[1200];
    time_t t = time(NULL);
    struct tm parts;
    gmtime_r(&t, &parts);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &parts);
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(text, sizeof text, format, arguments);
    va_end(arguments);
    int n = snprintf(line, sizeof line, "%s baton watchdog: %s\n", stamp, text);
    if (n > 0 && write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) { /* nowhere else to say it */ }
}

static uint64_t monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void state_file(char *out, size_t size, const char *name) { snprintf(out, size, "%s/watchdog.%s", options.state_directory, name); }

/* Writes `text` to `path` through a temporary file and a rename (keepalived watches it with inotify). */
static void write_atomically(const char *text, const char *path) {
    char temporary[BATON_FENCE_PATH_MAX + 32];
    snprintf(temporary, sizeof temporary, "%s.watchdog-tmp", path);
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write(fd, text, strlen(text)) < 0) { /* the rename below publishes what there is */ }
    fsync(fd);
    close(fd);
    rename(temporary, path);
}

/* MARK: The kernel's watchdog device (`/dev/watchdog`, e.g. the softdog module), as Patroni uses it:
 * if the whole machine freezes — this process with it, so that it cannot fence — the device resets the
 * machine before a replica may take over. Sized and petted so that it never fires under a leader whose
 * watchdog runs:
 * - its timeout T is set when leading starts, from the lease then: the whole seconds of what is left of
 *   it plus the takeover margin, less one (at least 1 s);
 * - it is petted every PET_INTERVAL while `now + T` is within the deadline plus the margin — so that,
 *   should the machine freeze right after a pet, it fires before a replica may take over — and not after;
 * - at the deadline this process closes it with the magic 'V' (which disarms it), then fences: the last
 *   pet came no sooner than `deadline + margin − T − PET_INTERVAL`, so the device would fire no sooner
 *   than `deadline + margin − PET_INTERVAL`.
 * A lease too short for a whole second is refused (`required`) or leads without the device. */

/* Replicas take over no sooner than this after the leader's deadline: ClusterConfig.fenceMargin, less
 * 100 ms for the time between the device firing and the machine stopping. */
#define TAKEOVER_MARGIN_NS 400000000ull
#define PET_INTERVAL_NS 100000000ull

static int kernel_fd = -1;
static uint64_t last_pet = 0, kernel_timeout_ns = 0;

static void pet(void) {
    if (write(kernel_fd, "1", 1) < 0) { /* the next pet tries again; the device fires if none gets through */ }
    last_pet = monotonic_ns();
}

/* Whether a pet now keeps the promise: the device, if not petted again, fires by deadline + margin. */
static int kernel_may_pet(uint64_t deadline, uint64_t now) { return now + kernel_timeout_ns <= deadline + TAKEOVER_MARGIN_NS; }

/* Opens the device as leading starts (or pets it if open and the new deadline allows). 0: it cannot
 * guard as required. */
static int kernel_arm(uint64_t deadline, uint64_t now) {
    if (options.kernel == KERNEL_OFF) return 1;
    if (kernel_fd >= 0) {
        if (kernel_may_pet(deadline, now)) pet();
        return 1;
    }
    int required = options.kernel == KERNEL_REQUIRED;
    long long left = deadline > now ? (long long)((deadline - now + TAKEOVER_MARGIN_NS) / 1000000000ull) - 1 : 0;
    if (left < 1) {
        say("the lease (%llu ms) is too short for the kernel watchdog's whole seconds%s", (unsigned long long)(deadline > now ? (deadline - now) / 1000000 : 0),
            required ? "; refusing to lead" : "; leading without it");
        return !required;
    }
    int fd = open(options.device, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        say("cannot open the kernel watchdog %s: %s%s", options.device, strerror(errno), required ? "; refusing to lead" : "; leading without it");
        return !required;
    }
    int seconds = (int)left, timeout = seconds;
    if (ioctl(fd, WDIOC_SETTIMEOUT, &timeout) != 0) {
        const char *reason = strerror(errno);
        if (required) {
            say("the kernel watchdog %s does not accept a %d s timeout (%s); refusing to lead", options.device, seconds, reason);
            if (write(fd, "V", 1) < 0) { /* closing disarms it where the magic close is not required */ }
            close(fd);
            return 0;
        }
        say("the kernel watchdog %s does not accept a %d s timeout (%s); it keeps its own", options.device, seconds, reason);
    }
    kernel_fd = fd;
    kernel_timeout_ns = (uint64_t)seconds * 1000000000ull;
    say("kernel watchdog %s armed (%d s)", options.device, seconds);
    pet();
    return 1;
}

static void kernel_keep_alive(uint64_t deadline, uint64_t now, int armed) {
    if (armed && kernel_fd >= 0 && now - last_pet >= PET_INTERVAL_NS && kernel_may_pet(deadline, now)) pet();
}

static void kernel_stand_down(void) {
    if (kernel_fd < 0) return;
    if (write(kernel_fd, "V", 1) < 0) { /* see kernel_arm */ }
    close(kernel_fd);
    kernel_fd = -1;
    say("kernel watchdog %s disarmed", options.device);
}

/* MARK: Fencing */

/* The data directory and `<bindir>/postgres` resolved now: a symbolic link re-pointed (a bindir link
 * moved to another installation) or a data directory mounted since this process started changes what
 * they resolve to, and the processes to fence are found by what they resolve to now — and by what they
 * resolved to at the start, for a postmaster started before the change. */
static void resolve_now(char *data_directory, char *executable) {
    char given[BATON_FENCE_PATH_MAX + 16];
    baton_fence_resolve(options.data_directory_given, data_directory, BATON_FENCE_PATH_MAX);
    snprintf(given, sizeof given, "%s/postgres", options.bin_directory);
    baton_fence_resolve(given, executable, BATON_FENCE_PATH_MAX);
}

/* The postmaster this watchdog would fence first (0: none runs). */
static pid_t postmaster_seen(void) {
    char data_directory[BATON_FENCE_PATH_MAX], executable[BATON_FENCE_PATH_MAX];
    resolve_now(data_directory, executable);
    pid_t pid = baton_fence_postmaster(data_directory, executable);
    return pid ? pid : baton_fence_postmaster(options.data_directory, options.executable);
}

static void fence(const char *why) {
    say("%s: stopping PostgreSQL (SIGKILL of every process of %s)", why, options.data_directory_given);
    if (options.track_file) write_atomically("-254\n", options.track_file);
    if (options.legacy_track_file) write_atomically("1\n", options.legacy_track_file);
    char data_directory[BATON_FENCE_PATH_MAX], executable[BATON_FENCE_PATH_MAX];
    resolve_now(data_directory, executable);
    int moved = strcmp(data_directory, options.data_directory) != 0 || strcmp(executable, options.executable) != 0;
    pid_t none[1];
    size_t before = baton_fence_running(data_directory, executable, none, 0);
    if (moved) before += baton_fence_running(options.data_directory, options.executable, none, 0);
    pid_t left[64];
    size_t count = baton_fence_kill_all(data_directory, executable, 5000, left, 64);
    if (moved) {
        say("the paths resolve elsewhere than at the start (%s, %s): fencing the processes of both", data_directory, executable);
        pid_t more[64];
        size_t also = baton_fence_kill_all(options.data_directory, options.executable, 5000, more, 64);
        for (size_t i = 0; i < also && count < 64; i++) left[count++] = more[i];
    }
    if (count == 0) {
        say("fenced: %zu process(es) killed, none left", before);
        return;
    }
    char list[512] = "";
    for (size_t i = 0, used = 0; i < count && i < 64 && used < sizeof list - 16; i++) used += (size_t)snprintf(list + used, sizeof list - used, "%s%d", i ? ", " : "", (int)left[i]);
    say("fencing incomplete: still alive after 5 s: [%s]", list);
}

/* MARK: Requests */

enum verb { LEAD, STAND_DOWN, FENCE_NOW, PING, QUIT, WHICH_POSTMASTER };

/* A whole unsigned decimal number. */
static int parse_u64(const char *text, uint64_t *out) {
    if (*text < '0' || *text > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (*end != 0 || errno != 0) return 0;
    *out = value;
    return 1;
}

/* `<sequence> <verb> [argument]`, words separated by spaces; 0 for anything else. */
static int parse_request(char *text, uint64_t *sequence, enum verb *verb, uint64_t *deadline) {
    char *words[4], *saved = NULL;
    int count = 0;
    for (char *word = strtok_r(text, " ", &saved); word; word = strtok_r(NULL, " ", &saved)) {
        if (count == 4) return 0;
        words[count++] = word;
    }
    if (count < 2 || !parse_u64(words[0], sequence) || strlen(words[1]) != 1) return 0;
    switch (words[1][0]) {
    case 'L': *verb = LEAD; return count == 3 && parse_u64(words[2], deadline);
    case 'N': *verb = STAND_DOWN; break;
    case 'F': *verb = FENCE_NOW; break;
    case 'P': *verb = PING; break;
    case 'Q': *verb = QUIT; break;
    case 'W': *verb = WHICH_POSTMASTER; break;
    default: return 0;
    }
    return count == 2;
}

static void reply_text(int socket_fd, const struct sockaddr_un *sender, socklen_t length, const char *text, int n) {
    if (sendto(socket_fd, text, (size_t)n, MSG_NOSIGNAL, (const struct sockaddr *)sender, length) < 0) { /* the monitor asks again */ }
}

static void reply(int socket_fd, const struct sockaddr_un *sender, socklen_t length, uint64_t sequence, const char *state) {
    char text[64];
    int n = snprintf(text, sizeof text, "%llu %s", (unsigned long long)sequence, state);
    reply_text(socket_fd, sender, length, text, n);
}

/* MARK: Start */

static void usage_error(const char *message) {
    fprintf(stderr, "baton-watchdog: %s\n%s\n", message, usage);
    exit(2);
}

static void parse_options(int argc, char **argv) {
    for (int i = 1; i < argc; i += 2) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value || strncmp(value, "--", 2) == 0) {
            char message[256];
            snprintf(message, sizeof message, "%s needs a value", flag);
            usage_error(message);
        }
        if (strcmp(flag, "--state-dir") == 0) options.state_directory = value;
        else if (strcmp(flag, "--pgdata") == 0) options.data_directory_given = value;
        else if (strcmp(flag, "--pg-bindir") == 0) options.bin_directory = value;
        else if (strcmp(flag, "--track-file") == 0) options.track_file = value;
        else if (strcmp(flag, "--legacy-track-file") == 0) options.legacy_track_file = value;
        else if (strcmp(flag, "--kernel-watchdog-device") == 0) options.device = value;
        else if (strcmp(flag, "--kernel-watchdog") == 0) {
            if (strcmp(value, "off") == 0) options.kernel = KERNEL_OFF;
            else if (strcmp(value, "automatic") == 0) options.kernel = KERNEL_AUTOMATIC;
            else if (strcmp(value, "required") == 0) options.kernel = KERNEL_REQUIRED;
            else usage_error("--kernel-watchdog must be off, automatic or required");
        } else {
            char message[256];
            snprintf(message, sizeof message, "unknown option %s", flag);
            usage_error(message);
        }
    }
    const char *names[] = {"--state-dir", "--pgdata", "--pg-bindir"};
    const char *values[] = {options.state_directory, options.data_directory_given, options.bin_directory};
    for (int i = 0; i < 3; i++) {
        if (values[i] && values[i][0] == '/') continue;
        char message[256];
        snprintf(message, sizeof message, "%s must be an absolute path", names[i]);
        usage_error(message);
    }
    char executable[BATON_FENCE_PATH_MAX + 16];
    snprintf(executable, sizeof executable, "%s/postgres", options.bin_directory);
    baton_fence_resolve(options.data_directory_given, options.data_directory, sizeof options.data_directory);
    baton_fence_resolve(executable, options.executable, sizeof options.executable);
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    char lock_path[BATON_FENCE_PATH_MAX], socket_path[BATON_FENCE_PATH_MAX], pid_path[BATON_FENCE_PATH_MAX];
    state_file(lock_path, sizeof lock_path, "lock");
    state_file(socket_path, sizeof socket_path, "sock");
    state_file(pid_path, sizeof pid_path, "pid");

    /* Only one watchdog per node. */
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        say("another watchdog holds %s; exiting", lock_path);
        return 1;
    }
    /* Nothing may stop it but SIGKILL, and the kernel should not choose it under memory pressure: its
     * pages locked, the OOM killer told to leave it. Locked as they are touched (MCL_ONFAULT), not every
     * page of every library mapped (the linker leaves libstdc++ and libm in, unused): what fencing
     * needs is touched right below, before any deadline can be armed. */
    int ignored[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) signal(ignored[i], SIG_IGN);
    if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0) say("cannot lock its memory (%s); continuing", strerror(errno));
    pid_t warm[1];
    (void)baton_fence_running(options.data_directory, options.executable, warm, 1);
    (void)baton_fence_state(getpid());
    (void)monotonic_ns();
    int adjustment = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (adjustment < 0 || write(adjustment, "-1000", 5) != 5) say("cannot opt out of the OOM killer (not root?); continuing");
    if (adjustment >= 0) close(adjustment);
    /* Its deadline is kept to the millisecond under load: it runs before the database it fences (the
     * monitor raises itself likewise; what either starts runs at the default priority). */
    if (setpriority(PRIO_PROCESS, 0, BATON_DAEMON_NICE) != 0) say("cannot raise its priority (%s; not root?); continuing", strerror(errno));

    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof address.sun_path) {
        say("cannot listen on %s: the socket name is too long", socket_path);
        return 1;
    }
    strcpy(address.sun_path, socket_path);
    unlink(socket_path);
    int listener = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0) {
        say("cannot listen on %s: %s", socket_path, strerror(errno));
        return 1;
    }
    chmod(socket_path, 0600);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d\n", (int)getpid());
    write_atomically(pid_text, pid_path);
    say("guarding %s (pid %d, socket %s, kernel watchdog %s)", options.data_directory_given, (int)getpid(), socket_path, kernel_mode_names[options.kernel]);

    int armed = 0;
    uint64_t deadline = 0;
    for (;;) {
        uint64_t now = monotonic_ns();
        if (armed && now >= deadline) {
            /* Disarmed first: the fence may take seconds, the device fires soon after the deadline. */
            kernel_stand_down();
            fence("deadline passed without a renewal");
            armed = 0;
            continue;
        }
        kernel_keep_alive(deadline, now, armed);
        uint64_t until = armed ? (deadline - now) / 1000000 + 1 : 1000;
        uint64_t most = armed && kernel_fd >= 0 ? PET_INTERVAL_NS / 1000000 : 500;
        struct pollfd ready = {.fd = listener, .events = POLLIN};
        if (poll(&ready, 1, until < most ? (int)until : (int)most) <= 0) continue;
        char text[512];
        struct sockaddr_un sender;
        socklen_t length = sizeof sender;
        ssize_t n = recvfrom(listener, text, sizeof text - 1, 0, (struct sockaddr *)&sender, &length);
        if (n <= 0) continue;
        text[n] = 0;
        char shown[512];
        for (ssize_t i = 0; i <= n; i++) shown[i] = (i < n && ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)) ? '?' : text[i];
        uint64_t sequence = 0, until_deadline = 0;
        enum verb verb;
        if (!parse_request(text, &sequence, &verb, &until_deadline)) {
            say("ignoring a malformed message \"%s\"", shown);
            continue;
        }
        const char *state = "idle";
        switch (verb) {
        case LEAD:
            if (kernel_arm(until_deadline, now)) {
                deadline = until_deadline;
                armed = 1;
                state = "armed";
            } else {
                state = "refused";
            }
            break;
        case STAND_DOWN:
            armed = 0;
            kernel_stand_down();
            break;
        case FENCE_NOW:
            kernel_stand_down();
            fence("the monitor asked");
            armed = 0;
            break;
        case PING:
            state = armed ? "armed" : "idle";
            break;
        case WHICH_POSTMASTER: {
            char text[96];
            int written = snprintf(text, sizeof text, "%llu %s %d", (unsigned long long)sequence, armed ? "armed" : "idle", (int)postmaster_seen());
            reply_text(listener, &sender, length, text, written);
            continue;
        }
        case QUIT:
            if (!armed) {
                reply(listener, &sender, length, sequence, "idle");
                kernel_stand_down();
                unlink(socket_path);
                unlink(pid_path);
                say("the monitor stopped cleanly; exiting");
                return 0;
            }
            state = "armed";
            break;
        }
        reply(listener, &sender, length, sequence, state);
    }
}

/* swiftc links every executable with swiftrt.o, which registers the image's Swift metadata with the
 * Swift runtime at start. This program has no Swift in it: it answers that registration itself, so
 * that the runtime (several MB, all of it locked by mlockall) is not loaded — the linker drops it
 * (--as-needed) — and a static build links none of it. */
void swift_addNewDSOImage(const void *sections);
void swift_addNewDSOImage(const void *sections) { (void)sections; }
int _swift_backtrace_isThunkFunction(const char *name);
int _swift_backtrace_isThunkFunction(const char *name) {
    (void)name;
    return 0;
}
