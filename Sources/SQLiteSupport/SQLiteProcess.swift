import CSQLiteProcess
import Glibc

/// SQLite's process-wide options. They can only be set before SQLite initialises, so the first store to open
/// a database sets them; if something opened SQLite earlier, the defaults stay, which is slower but as safe.
public enum SQLiteProcess {
    /// True when SQLite runs in multi-thread mode without memory statistics (see `sqlite_process.c`).
    public static let configured: Bool = {
        _ = pkr_sqlite_configure_process()
        return pkr_sqlite_process_configured() == 1
    }()

    /// Sets the options once per process; later calls do nothing.
    public static func configure() {
        _ = configured
    }
}

/// How a connection waits for another connection's write lock (the provider's pool and the gateway's share a file
/// by default). SQLite's own timeout sleeps 1, 2, 5 ... up to 100 ms between tries, so a writer that just missed
/// the lock sleeps far longer than the other's transaction holds it; these waits stay short and give up after the
/// same total.
public enum SQLiteBusyWait {
    static let sleepMicros: UInt32 = 250

    public static func shortWaits(totalSeconds: Int) -> @Sendable (Int) -> Bool {
        let triesMax = totalSeconds * Int(1_000_000 / sleepMicros)
        return { tries in
            guard tries < triesMax else { return false }
            usleep(sleepMicros)
            return true
        }
    }
}
