#include <sqlite3.h>
#include "sqlite_process.h"

static int configured = 0;

// sqlite3_config is variadic, so Swift cannot call it; this file does.
//
// Multi-thread mode: GRDB already serialises every use of a connection on that connection's queue, so the
// mutex SQLite's default (serialised) mode takes around each API call is pure cost (about 6% of the writer's
// time in the backlog profile). Memory statistics off: with them on, every SQLite allocation and free takes one
// process-wide mutex to keep counters this program never reads.
int pkr_sqlite_configure_process(void) {
    int rc = sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc != SQLITE_OK) return rc;
    configured = 1;
    return SQLITE_OK;
}

int pkr_sqlite_process_configured(void) { return configured; }
