import Foundation
import GRDB
import GRDBSQLite
import PKRApplication
import Synchronization

/// Moves WAL checkpoints off the writer. SQLite's default checkpoints inside the commit that crosses 1,000 WAL
/// pages, so the single writer stops to copy pages into the database file and fsync it. Here the writer's commit
/// hook only asks a second connection to checkpoint (PASSIVE: it never blocks the writer or the readers), and
/// checkpoints on the writer itself only if the WAL grows past `writerFramesMax`, should the background
/// connection fall behind.
final class WALCheckpointer: Sendable {
    /// SQLite's own autocheckpoint threshold (about 4 MiB of 4 KiB pages).
    static let backgroundFramesMin: Int32 = 1000
    /// A WAL this long (about 64 MiB) is checkpointed by the writer itself.
    static let writerFramesMax: Int32 = 16_384
    /// A request waits this long, and the requests made meanwhile share its checkpoint. Checkpointing after every
    /// commit past the threshold copied the pages every commit rewrites (balances, the ledger head, the ends of
    /// the append-only tables) once per commit, and synced the database file as often, beside the writer's own
    /// syncs. Measured with 50 and 200 ms, webhook mints at 64 connections went from about 4,000/s to 4,500/s.
    /// Meanwhile the WAL grows by about what the writer commits in that time (a few MiB under the benchmark).
    static let coalescingDelayMillis = 100

    private let path: String
    private let configuration: Configuration
    private let connection = Mutex<DatabaseQueue?>(nil)
    private let requested = Atomic<Bool>(false)

    init(path: String, configuration: Configuration) {
        self.path = path
        self.configuration = configuration
    }

    /// Replaces the writer connection's autocheckpoint with this checkpointer. The hook holds the checkpointer
    /// weakly, so a connection that outlives its store only falls back to checkpointing by itself.
    func install(on db: Database) {
        let target = Unmanaged.passRetained(HookTarget(self)).toOpaque()
        sqlite3_wal_hook(
            db.sqliteConnection,
            { context, connection, _, frames in
                guard let context else { return SQLITE_OK }
                let checkpointer = Unmanaged<HookTarget>.fromOpaque(context).takeUnretainedValue().checkpointer
                if frames >= WALCheckpointer.writerFramesMax || checkpointer == nil {
                    if frames >= WALCheckpointer.backgroundFramesMin {
                        sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
                    }
                } else if frames >= WALCheckpointer.backgroundFramesMin {
                    checkpointer?.request()
                }
                return SQLITE_OK
            }, target)
    }

    private func request() {
        guard !requested.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // Held weakly while it waits: a store closed meanwhile is not reopened to checkpoint.
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + .milliseconds(Self.coalescingDelayMillis)) { [weak self] in
            guard let self else { return }
            requested.store(false, ordering: .releasing)
            do {
                try connection.withLock { queue in
                    if queue == nil { queue = try DatabaseQueue(path: path, configuration: configuration) }
                    _ = try queue!.writeWithoutTransaction { try $0.checkpoint(.passive) }
                }
            } catch {
                // A failed passive checkpoint loses nothing: the frames stay in the WAL for the next one,
                // and the writer checkpoints by itself past `writerFramesMax`.
            }
        }
    }

    private final class HookTarget {
        weak var checkpointer: WALCheckpointer?
        init(_ checkpointer: WALCheckpointer) { self.checkpointer = checkpointer }
    }
}
