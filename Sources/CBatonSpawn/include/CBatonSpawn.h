#ifndef BATON_CBATONSPAWN_H
#define BATON_CBATONSPAWN_H
#include <sys/types.h>

/// Starts `path` with `argv` and `envp` (NULL-terminated), stdin from `stdin_fd`, stdout and stderr to
/// `output_fd`, and every other descriptor closed, so that a daemon it starts inherits nothing of
/// ours. Returns the child's pid, or -errno.
pid_t baton_spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int output_fd);

/// Sets the effective user ID of the calling thread only (the raw system call: glibc's seteuid changes
/// every thread). A Unix-socket connection made meanwhile carries that ID as its peer credentials.
/// Returns 0 or -errno.
int baton_thread_set_euid(uid_t euid);

/// Sets the nice value of every thread of this process (threads made later inherit it from the thread
/// that makes them). What `baton_spawn` starts runs at the default priority all the same. Returns 0 or
/// -errno (raising it needs root or CAP_SYS_NICE).
int baton_raise_priority(int nice_value);
#endif
