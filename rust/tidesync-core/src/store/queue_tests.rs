//! Store-level tests of the change queue and page application (no network).

use super::Store;
use super::apply::{Batch, ObjectError, apply};
use super::meta;
use super::queue::{self, PushOutcome};
use crate::model::{Attrs, SourceDef};

fn a(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("t.db")).expect("open");
    s.define_source(&SourceDef::new("Parent").priority(1)).expect("define");
    s.define_source(&SourceDef::new("Child").priority(2).belongs_to("parent_id", "Parent"))
        .expect("define");
    (dir, s)
}

fn changes(s: &Store, source: &str) -> Vec<(String, String, String)> {
    s.read(|c| {
        let src = meta::source(c, source)?;
        Ok(queue::changes(c, src.id)?
            .into_iter()
            .map(|ch| (ch.object, ch.op, ch.state))
            .collect())
    })
    .expect("changes")
}

fn push(s: &Store, source: &str) -> queue::PushBatch {
    s.write(|tx| {
        let all = meta::sources(tx)?;
        let src = meta::source(tx, source)?;
        queue::take_for_push(tx, &src, &all)
    })
    .expect("take")
}

fn finish(s: &Store, source: &str, push_id: i64, o: PushOutcome) {
    s.write(|tx| {
        let src = meta::source(tx, source)?;
        queue::push_finished(tx, src.id, push_id, o)
    })
    .expect("finish");
}

fn apply_batch(s: &Store, source: &str, b: &Batch<'_>) -> super::apply::ApplyStats {
    s.write(|tx| {
        let all = meta::sources(tx)?;
        let src = meta::source(tx, source)?;
        apply(tx, &src, &all, b)
    })
    .expect("apply")
}

#[test]
fn create_then_update_is_one_create_with_the_latest_values() {
    let (_d, s) = store();
    let o = s.create("Parent", a(&[("name", "a")])).expect("create");
    s.update("Parent", &o.id, a(&[("name", "b")])).expect("update");
    assert_eq!(
        changes(&s, "Parent"),
        vec![(o.id.clone(), "create".into(), "pending".into())]
    );
    let b = push(&s, "Parent");
    assert_eq!(b.creates, vec![(o.id.clone(), a(&[("name", "b")]))]);
}

#[test]
fn create_then_delete_queues_nothing() {
    let (_d, s) = store();
    let o = s.create("Parent", a(&[("name", "a")])).expect("create");
    s.destroy("Parent", &o.id).expect("destroy");
    assert!(changes(&s, "Parent").is_empty());
}

#[test]
fn updates_merge_and_a_delete_replaces_them() {
    let (_d, s) = store();
    apply_batch(
        &s,
        "Parent",
        &Batch {
            inserts: vec![("1", vec![("a", "0"), ("b", "0")])],
            ..Batch::default()
        },
    );
    s.update("Parent", "1", a(&[("a", "1")])).expect("update");
    s.update("Parent", "1", a(&[("a", "2"), ("b", "2")])).expect("update");
    s.update("Parent", "1", a(&[("b", "2")]))
        .expect("unchanged value is not queued");
    let b = push(&s, "Parent");
    assert_eq!(b.updates, vec![("1".to_owned(), a(&[("a", "2"), ("b", "2")]))]);
    finish(&s, "Parent", b.push_id, PushOutcome::Rejected);
    s.destroy("Parent", "1").expect("destroy");
    assert_eq!(
        changes(&s, "Parent"),
        vec![("1".into(), "delete".into(), "pending".into())]
    );
}

#[test]
fn rows_in_flight_are_immutable_and_new_edits_queue_separately() {
    let (_d, s) = store();
    apply_batch(
        &s,
        "Parent",
        &Batch {
            inserts: vec![("1", vec![("a", "0")])],
            ..Batch::default()
        },
    );
    s.update("Parent", "1", a(&[("a", "1")])).expect("update");
    let b = push(&s, "Parent");
    s.update("Parent", "1", a(&[("a", "2")])).expect("update during push");
    let states: Vec<String> = changes(&s, "Parent").into_iter().map(|c| c.2).collect();
    assert_eq!(states, vec!["in_flight", "pending"]);
    finish(&s, "Parent", b.push_id, PushOutcome::Accepted);
    let next = push(&s, "Parent");
    assert_eq!(next.updates, vec![("1".to_owned(), a(&[("a", "2")]))]);
}

#[test]
fn a_link_renames_the_object_its_queue_rows_and_child_references() {
    let (_d, s) = store();
    let p = s.create("Parent", a(&[("name", "p")])).expect("create");
    let c = s.create("Child", a(&[("parent_id", &p.id)])).expect("create child");
    let b = push(&s, "Parent");
    finish(&s, "Parent", b.push_id, PushOutcome::Accepted);
    // The child refers to an unconfirmed parent: held back.
    assert!(push(&s, "Child").is_empty());
    s.update("Parent", &p.id, a(&[("name", "p2")]))
        .expect("edit while awaiting the link");
    let stats = apply_batch(
        &s,
        "Parent",
        &Batch {
            links: vec![(&p.id, "77")],
            checkpoint: Some("t1"),
            ..Batch::default()
        },
    );
    assert_eq!(stats.links, vec![(p.id.clone(), "77".to_owned())]);
    assert_eq!(s.find("Parent", &p.id).expect("find"), None);
    assert_eq!(
        s.find("Parent", "77").expect("find").expect("renamed").attrs,
        a(&[("name", "p2")])
    );
    assert_eq!(
        changes(&s, "Parent"),
        vec![("77".into(), "update".into(), "pending".into())]
    );
    assert_eq!(
        s.find("Child", &c.id).expect("find").expect("child").attrs,
        a(&[("parent_id", "77")])
    );
    let cb = push(&s, "Child");
    assert_eq!(cb.creates, vec![(c.id.clone(), a(&[("parent_id", "77")]))]);
}

#[test]
fn a_page_does_not_overwrite_an_unpushed_local_edit() {
    let (_d, s) = store();
    apply_batch(
        &s,
        "Parent",
        &Batch {
            inserts: vec![("1", vec![("a", "0"), ("b", "0")])],
            ..Batch::default()
        },
    );
    s.update("Parent", "1", a(&[("a", "mine")])).expect("update");
    let stats = apply_batch(
        &s,
        "Parent",
        &Batch {
            deletes: vec![("1", vec!["a", "b"])],
            inserts: vec![("1", vec![("a", "theirs"), ("b", "1")])],
            ..Batch::default()
        },
    );
    assert_eq!(stats.conflicts_kept_local, 2);
    assert_eq!(
        s.find("Parent", "1").expect("find").expect("obj").attrs,
        a(&[("a", "mine"), ("b", "1")])
    );
}

#[test]
fn the_echo_of_a_sent_update_confirms_it() {
    let (_d, s) = store();
    apply_batch(
        &s,
        "Parent",
        &Batch {
            inserts: vec![("1", vec![("a", "0")])],
            ..Batch::default()
        },
    );
    s.update("Parent", "1", a(&[("a", "1")])).expect("update");
    let b = push(&s, "Parent");
    finish(&s, "Parent", b.push_id, PushOutcome::Unknown);
    let stats = apply_batch(
        &s,
        "Parent",
        &Batch {
            deletes: vec![("1", vec!["a"])],
            inserts: vec![("1", vec![("a", "1")])],
            ..Batch::default()
        },
    );
    assert_eq!(stats.echoes_confirmed, 1);
    assert!(changes(&s, "Parent").is_empty());
    assert_eq!(
        s.find("Parent", "1").expect("find").expect("obj").attrs,
        a(&[("a", "1")])
    );
}

#[test]
fn unknown_creates_wait_for_the_pull_and_are_resent_only_without_a_link() {
    let (_d, s) = store();
    let o = s.create("Parent", a(&[("name", "x")])).expect("create");
    let b = push(&s, "Parent");
    finish(&s, "Parent", b.push_id, PushOutcome::Unknown);
    assert!(
        push(&s, "Parent").is_empty(),
        "an unknown create is not re-pushed before a pull"
    );
    s.write(|tx| {
        let src = meta::source(tx, "Parent")?;
        queue::settle_after_pull(tx, src.id)
    })
    .expect("settle");
    let again = push(&s, "Parent");
    assert_eq!(
        again.creates.len(),
        1,
        "no link after a complete pull: not created, send again"
    );
    assert_eq!(again.creates[0].0, o.id);
}

#[test]
fn a_create_error_fails_the_create_and_defers_the_ones_after_it() {
    let (_d, s) = store();
    let x = s.create("Parent", a(&[("name", "error")])).expect("create");
    let y = s.create("Parent", a(&[("name", "fine")])).expect("create");
    let b = push(&s, "Parent");
    assert_eq!(
        b.creates.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        vec![x.id.clone(), y.id.clone()]
    );
    finish(&s, "Parent", b.push_id, PushOutcome::Accepted);
    apply_batch(
        &s,
        "Parent",
        &Batch {
            create_errors: vec![ObjectError {
                id: &x.id,
                message: "no",
                attrs: vec![("name", "error")],
            }],
            checkpoint: Some(""),
            ..Batch::default()
        },
    );
    s.write(|tx| {
        let src = meta::source(tx, "Parent")?;
        queue::settle_after_pull(tx, src.id)
    })
    .expect("settle");
    let st = changes(&s, "Parent");
    assert!(st.contains(&(x.id.clone(), "create".into(), "failed".into())));
    assert!(st.contains(&(y.id.clone(), "create".into(), "deferred".into())));
    assert!(
        push(&s, "Parent").marker,
        "a push marker makes the server run its deferred queue"
    );
}

/// Apply throughput of the store alone (no network, no parse): run with
/// `cargo test --release -p tidesync-core --lib -- --ignored --nocapture apply_speed`.
#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn apply_speed() {
    let (_d, s) = store();
    let n = 100_000usize;
    let objs: Vec<(String, Vec<(String, String)>)> = (0..n)
        .map(|i| {
            (
                i.to_string(),
                (0..10)
                    .map(|j| (format!("attr{j}"), format!("value{i:06}x{j}")))
                    .collect(),
            )
        })
        .collect();
    let t = std::time::Instant::now();
    for chunk in objs.chunks(2000) {
        let inserts: Vec<(&str, Vec<(&str, &str)>)> = chunk
            .iter()
            .map(|(id, a)| (id.as_str(), a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()))
            .collect();
        apply_batch(
            &s,
            "Parent",
            &Batch {
                inserts,
                checkpoint: Some("t"),
                ..Batch::default()
            },
        );
    }
    let secs = t.elapsed().as_secs_f64();
    println!("apply: {n} objects in {secs:.3} s = {:.0} objects/s", n as f64 / secs);
    let t = std::time::Instant::now();
    let batch: Vec<Attrs> = (0..1000)
        .map(|i| a(&[("name", &format!("n{i}")), ("x", "1"), ("y", "2")]))
        .collect();
    s.create_many("Parent", batch).expect("create");
    println!("create_many 1k: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = std::time::Instant::now();
    let c = s.count("Parent", None).expect("count");
    println!("count {c}: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
}
