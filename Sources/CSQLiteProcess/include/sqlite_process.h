#ifndef PKR_SQLITE_PROCESS_H
#define PKR_SQLITE_PROCESS_H

/// Sets SQLite's process-wide options; see sqlite_process.c. Returns an SQLite result code: SQLITE_OK, or
/// SQLITE_MISUSE when SQLite was already initialised in this process (the options then stay at their defaults).
int pkr_sqlite_configure_process(void);

/// 1 when this process runs SQLite without its per-connection mutexes and memory statistics.
int pkr_sqlite_process_configured(void);

#endif
