import CSQLiteProcess

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
