//! Making sled's writes durable from async code.
//!
//! sled 0.34's `flush_async` can hang forever when several of its futures are polled at
//! once (spacejam/sled#1308, fixed only on sled's unreleased main branch): under a few
//! concurrent REST calls a request never got its answer. A blocking `flush` on tokio's
//! blocking pool has no such failure; sled serializes concurrent flushes itself, and a
//! flush that finds nothing dirty returns at once.

/// Flushes `db` to disk on the blocking pool.
pub async fn flush(db: &sled::Db) -> sled::Result<()> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(flushed) => flushed.map(drop),
        Err(e) => Err(sled::Error::Io(std::io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    /// A hundred writers flushing at once all finish (with `flush_async` some never
    /// woke up in release builds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let writers: Vec<_> = (0u32..100)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), &[0u8; 64][..]).unwrap();
                    super::flush(&db).await
                })
            })
            .collect();
        let all = async {
            for writer in writers {
                writer.await.unwrap().unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("every flush finished");
    }
}
