//! Exports cross backends: a store populated on SQLite imports into PostgreSQL record for
//! record, and back again, with the audit chain verifying and going on in each.

use crate::backends::{Postgres, Sqlite};
use crate::suite::{Ctx, chain_verifies_and_goes_on, export_all, populate, stream_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_and_back_keeps_every_record() {
    let sqlite = Ctx::empty(&Sqlite).await;
    let p = populate(sqlite.store.as_ref()).await;
    let from_sqlite = export_all(sqlite.store.as_ref()).await;

    let pg = Ctx::empty(&Postgres::DEFAULT).await;
    pg.store
        .import(stream_of(from_sqlite.iter().cloned().map(Ok).collect()))
        .await
        .unwrap();
    let from_pg = export_all(pg.store.as_ref()).await;
    assert_eq!(from_pg, from_sqlite);

    // PostgreSQL's export, straight from its stream, into a second SQLite store.
    let back = Ctx::empty(&Sqlite).await;
    back.store
        .import(pg.store.export().await.unwrap())
        .await
        .unwrap();
    assert_eq!(export_all(back.store.as_ref()).await, from_sqlite);

    chain_verifies_and_goes_on(pg.store.as_ref(), &p).await;
    chain_verifies_and_goes_on(back.store.as_ref(), &p).await;
}
