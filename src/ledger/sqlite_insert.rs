//! The SQLite engine's insert of request rows, through SQLite's C API. rusqlite binds
//! every string as a copy (`SQLITE_TRANSIENT`: an allocation, a copy and a free per text
//! column), which made binding the largest part of the writer thread's time per row.
//! Here strings are bound in place (`SQLITE_STATIC`): they are the rows' own, and
//! outlive the step that reads them.

use std::ffi::{c_int, CStr, CString};
use std::ptr;

use rusqlite::{ffi, Connection};

use super::row::Row;
use super::store::COLUMNS;

/// A row's columns, in [`COLUMNS`] order.
const ROW_COLUMNS: c_int = 23;

/// A prepared insert of a fixed number of rows.
pub struct RowInsert {
    stmt: *mut ffi::sqlite3_stmt,
    rows: usize,
}

// SAFETY: a prepared statement may move between threads when it is not used by two at
// once (SQLite's default threading mode); `RowInsert` is owned by one `Sqlite`, which is
// used by one thread at a time (`&mut self`).
unsafe impl Send for RowInsert {}

impl RowInsert {
    /// Prepares an insert of `rows` rows on `conn`.
    pub fn prepare(conn: &Connection, rows: usize) -> Result<RowInsert, String> {
        let one = format!("({})", vec!["?"; ROW_COLUMNS as usize].join(", "));
        let sql = format!(
            "INSERT OR FAIL INTO requests ({COLUMNS}) VALUES {}",
            vec![one; rows].join(", ")
        );
        let sql = CString::new(sql).expect("no NUL in SQL text");
        let mut stmt = ptr::null_mut();
        // SAFETY: the handle is `conn`'s, open for the call; `stmt` receives a statement
        // this struct finalizes on drop, before `conn` closes (`Sqlite`'s field order).
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                conn.handle(),
                sql.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(format!("preparing the insert: {}", error(conn)));
        }
        Ok(RowInsert { stmt, rows })
    }

    /// How many rows one [`RowInsert::run`] takes.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inserts `rows` (as many as prepared for) inside the caller's transaction.
    pub fn run(&mut self, conn: &Connection, rows: &[Row]) -> Result<(), String> {
        assert_eq!(rows.len(), self.rows, "an insert of a fixed row count");
        let mut b = Binder {
            stmt: self.stmt,
            at: 0,
            ok: true,
        };
        for row in rows {
            let t = row.texts();
            b.text(Some(t.id));
            b.int(Some(row.at_ms));
            b.text(Some(t.domain));
            b.text(t.client);
            b.text(Some(t.credential));
            b.text(Some(t.method));
            b.text(Some(t.path));
            b.text(t.model);
            b.int(Some(u64::from(row.stream)));
            b.int(Some(u64::from(row.status)));
            b.int(Some(row.duration_ms));
            b.int(row.ttfb_ms);
            b.int(Some(row.input_tokens));
            b.int(Some(row.output_tokens));
            b.int(Some(row.cache_creation_input_tokens));
            b.int(Some(row.cache_read_input_tokens));
            b.int(Some(row.tool_calls));
            b.int(row.cost.map(|usd| u64::try_from(usd.0).unwrap_or(u64::MAX)));
            b.text(t.session_id);
            b.text(row.request_class);
            b.int(row.bytes_in);
            b.int(Some(row.bytes_out));
            b.text(t.error);
        }
        debug_assert_eq!(b.at as usize, self.rows * ROW_COLUMNS as usize);
        let bound = b.ok;
        // SAFETY: `stmt` is a live statement of `conn`. Every parameter was bound above
        // from `rows`, which outlive this call. The bindings are not cleared after it (a
        // clear costs as much as a tenth of the binds): the pointers into `rows` they keep
        // are never read, because SQLite reads a parameter only in a step, and no step
        // runs before every parameter has been bound again (`bound`).
        let rc = unsafe {
            let rc = if bound {
                ffi::sqlite3_step(self.stmt)
            } else {
                ffi::SQLITE_MISUSE
            };
            ffi::sqlite3_reset(self.stmt);
            rc
        };
        match rc {
            ffi::SQLITE_DONE => Ok(()),
            _ if !bound => Err("binding a row to the insert failed".into()),
            _ => Err(error(conn)),
        }
    }
}

/// Binds values to a statement's parameters in order; `ok` stays true while every bind
/// succeeds.
struct Binder {
    stmt: *mut ffi::sqlite3_stmt,
    at: c_int,
    ok: bool,
}

impl Binder {
    /// The next parameter's index (they count from 1).
    fn next(&mut self) -> c_int {
        self.at += 1;
        self.at
    }

    fn text(&mut self, value: Option<&str>) {
        let at = self.next();
        // SAFETY: `stmt` is live; SQLITE_STATIC is sound because `RowInsert::run` steps
        // while the rows (and so `value`) are borrowed, and steps again only after binding
        // every parameter anew.
        let rc = unsafe {
            match value {
                Some(s) => ffi::sqlite3_bind_text64(
                    self.stmt,
                    at,
                    s.as_ptr().cast(),
                    s.len() as u64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                None => ffi::sqlite3_bind_null(self.stmt, at),
            }
        };
        self.ok &= rc == ffi::SQLITE_OK;
    }

    fn int(&mut self, value: Option<u64>) {
        let at = self.next();
        // SAFETY: `stmt` is live; integers are copied.
        let rc = unsafe {
            match value {
                Some(n) => ffi::sqlite3_bind_int64(self.stmt, at, n.min(i64::MAX as u64) as i64),
                None => ffi::sqlite3_bind_null(self.stmt, at),
            }
        };
        self.ok &= rc == ffi::SQLITE_OK;
    }
}

impl Drop for RowInsert {
    fn drop(&mut self) {
        // SAFETY: the statement is ours and finalized once.
        unsafe { ffi::sqlite3_finalize(self.stmt) };
    }
}

/// The connection's last error message.
fn error(conn: &Connection) -> String {
    // SAFETY: the handle is live; SQLite returns a NUL-terminated string it owns, copied
    // here before any other call on the connection.
    unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(conn.handle())) }
        .to_string_lossy()
        .into_owned()
}
