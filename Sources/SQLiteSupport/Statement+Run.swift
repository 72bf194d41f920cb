import GRDB
import GRDBSQLite

/// A value that binds straight into a prepared statement. The writer's hot paths bind through this instead of
/// GRDB's `StatementArguments`, which box every value into a `DatabaseValue` array and wrap each in a closure
/// on every execution: that bookkeeping was a quarter of the single writer's time in the profiles.
public protocol SQLiteBindable {
    func bind(to statement: SQLiteStatement, at index: Int32) -> Int32
}

/// SQLite copies the value before `sqlite3_bind_*` returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

extension Int64: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) -> Int32 { sqlite3_bind_int64(statement, index, self) }
}

extension Int: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) -> Int32 { sqlite3_bind_int64(statement, index, Int64(self)) }
}

extension Bool: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) -> Int32 { sqlite3_bind_int64(statement, index, self ? 1 : 0) }
}

extension String: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) -> Int32 {
        var text = self
        // An empty buffer may have no address, and a null pointer would bind NULL instead of ''.
        return text.withUTF8 { utf8 in
            guard let base = utf8.baseAddress, !utf8.isEmpty else { return sqlite3_bind_text(statement, index, "", 0, transient) }
            return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) {
                sqlite3_bind_text(statement, index, $0, Int32(utf8.count), transient)
            }
        }
    }
}

/// A blob, as opposed to the text a `String` binds.
public struct SQLiteBlob: SQLiteBindable {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func bind(to statement: SQLiteStatement, at index: Int32) -> Int32 {
        bytes.withUnsafeBytes { raw in
            raw.isEmpty
                ? sqlite3_bind_zeroblob(statement, index, 0)
                : sqlite3_bind_blob(statement, index, raw.baseAddress, Int32(raw.count), transient)
        }
    }
}

extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) -> Int32 {
        switch self {
        case .none: sqlite3_bind_null(statement, index)
        case .some(let value): value.bind(to: statement, at: index)
        }
    }
}

/// The current row of a stepped statement; valid only inside the `first` closure that receives it.
public struct SQLiteRow {
    let statement: SQLiteStatement

    public func isNull(_ column: Int32) -> Bool { sqlite3_column_type(statement, column) == SQLITE_NULL }
    public func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }
    public func bool(_ column: Int32) -> Bool { sqlite3_column_int64(statement, column) != 0 }

    public func string(_ column: Int32) -> String {
        guard let text = sqlite3_column_text(statement, column) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: text, count: Int(sqlite3_column_bytes(statement, column))), as: UTF8.self)
    }

    public func optionalString(_ column: Int32) -> String? { isNull(column) ? nil : string(column) }
}

extension Statement {
    /// Binds `values` to the statement's parameters in order and runs it to completion.
    public func run<each Value: SQLiteBindable>(_ values: repeat each Value) throws {
        try bindAll(repeat each values)
        defer { finish() }
        while true {
            switch sqlite3_step(sqliteStatement) {
            case SQLITE_DONE: return
            case SQLITE_ROW: continue
            default: throw failure()
            }
        }
    }

    /// Binds `values` and returns `decode` applied to the first row, or nil when there is none.
    public func first<T, each Value: SQLiteBindable>(_ values: repeat each Value, decode: (SQLiteRow) throws -> T) throws -> T? {
        try bindAll(repeat each values)
        defer { finish() }
        switch sqlite3_step(sqliteStatement) {
        case SQLITE_DONE: return nil
        case SQLITE_ROW: return try decode(SQLiteRow(statement: sqliteStatement))
        default: throw failure()
        }
    }

    fileprivate func bindAll<each Value: SQLiteBindable>(_ values: repeat each Value) throws {
        sqlite3_reset(sqliteStatement)
        var index: Int32 = 0
        for value in repeat each values {
            index += 1
            let code = value.bind(to: sqliteStatement, at: index)
            guard code == SQLITE_OK else { throw failure(code) }
        }
        // A parameter left unbound would silently be NULL: the values must match the statement exactly.
        precondition(index == sqlite3_bind_parameter_count(sqliteStatement), "\(index) values for: \(sql)")
    }

    /// Leaves the statement reset and holding no copies of the bound values.
    fileprivate func finish() {
        sqlite3_reset(sqliteStatement)
        sqlite3_clear_bindings(sqliteStatement)
    }

    fileprivate func failure(_ code: Int32? = nil) -> DatabaseError {
        let connection = sqlite3_db_handle(sqliteStatement)
        let extended = code ?? sqlite3_extended_errcode(connection)
        return DatabaseError(
            resultCode: ResultCode(rawValue: extended),
            message: connection.map { String(cString: sqlite3_errmsg($0)) }, sql: sql)
    }
}

/// Column access shared by GRDB's `Row` and `SQLiteRow`, so that one decoder serves both.
public protocol ColumnReader {
    func int64(_ column: Int32) -> Int64
    func bool(_ column: Int32) -> Bool
    func string(_ column: Int32) -> String
    func optionalString(_ column: Int32) -> String?
}

extension SQLiteRow: ColumnReader {}

extension Row: ColumnReader {
    public func int64(_ column: Int32) -> Int64 { self[Int(column)] }
    public func bool(_ column: Int32) -> Bool { self[Int(column)] }
    public func string(_ column: Int32) -> String { self[Int(column)] }
    public func optionalString(_ column: Int32) -> String? { self[Int(column)] }
}

extension Statement {
    /// Binds `values` and calls `body` with every row in turn; `body` returns false to stop early.
    public func forEach<each Value: SQLiteBindable>(_ values: repeat each Value, body: (SQLiteRow) throws -> Bool) throws {
        try bindAll(repeat each values)
        defer { finish() }
        while true {
            switch sqlite3_step(sqliteStatement) {
            case SQLITE_DONE: return
            case SQLITE_ROW: guard try body(SQLiteRow(statement: sqliteStatement)) else { return }
            default: throw failure()
            }
        }
    }
}
