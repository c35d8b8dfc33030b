//! The tamper suite on S3 Object Lock (moto): the 222 real events go emulator → ingester →
//! signer → a COMPLIANCE-locked bucket, the verifier reads only the bucket (with the lock
//! checks on), and every tampering an attacker with write access to the bucket can do while
//! the lock holds is caught, with its kind and place, and nothing else is reported for it.
//!
//! The attacker model is the one Object Lock leaves open (see `sealtrail_store::s3`): a
//! locked version can be neither deleted nor shortened, but
//! - a PUT without `If-None-Match` puts a new *current* version on top of a key (the locked
//!   one stays, readable by version id only): that is how a segment is "changed", "swapped"
//!   or "re-uploaded without a lock";
//! - a DELETE without a version id adds a delete marker that hides the key from listings and
//!   reads: that is how a segment is "deleted";
//! - a PUT to a new key adds an object.
//!
//! The attacker locks what they upload (COMPLIANCE, long retention) unless the case is about
//! the lock, so that the lock check does not catch the tampering for the wrong reason.
//!
//! The replay is done once, into a pristine bucket; each case gets a bucket of its own,
//! filled from the pristine one through a create-new `S3Store` (same bytes, fresh locks),
//! so that cases do not interfere. The backdated event needs fresh events (the sample
//! events are from 2018, all "late"): it has a small log of its own in another bucket.
//!
//! Two variants have tests of their own at the end of the file (they found verifier bugs,
//! since fixed): a copy whose key sorts before the original's, and a checkpoint replaced in
//! the only segment that carries it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use common::*;
use sealtrail_core::checkpoint::{NoteSignature, SignedCheckpoint};
use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::{self, Hash, MemoryLog};
use sealtrail_core::segment::{self, SegmentHeader};
use sealtrail_signer::{DevKeyFile, KeyBackend as _};
use sealtrail_store::s3::S3Store;
use sealtrail_store::{ObjectStore, RetentionMode};
use sealtrail_tests::moto::{MotoServer, s3_client};
use sealtrail_verifier::{FindingKind, ObjectLockPolicy, Options, Report, State, verify_store};
use time::format_description::well_known::Rfc3339;

const PREFIX: &str = "cluster-1/";
const DAY: Duration = Duration::from_secs(86_400);
/// What the ingester (and the attacker, to pass the lock check) locks objects for.
const RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// What the verifier requires.
const MIN_RETENTION: Duration = Duration::from_secs(365 * 86_400);

/// One stored segment of the pristine replay.
struct Seg {
    key: String,
    bytes: Vec<u8>,
    header: SegmentHeader,
}

impl Seg {
    fn first(&self) -> u64 {
        self.header.first_index
    }
    fn last(&self) -> u64 {
        self.header.first_index + self.header.count - 1
    }
    fn cp(&self) -> &SignedCheckpoint {
        &self.header.checkpoint
    }
    /// The lines of the segment, each with its newline (line 0 is the header).
    fn lines(&self) -> Vec<&[u8]> {
        self.bytes.split_inclusive(|b| *b == b'\n').collect()
    }
}

/// One moto server for the file (its watchdog stops it when the test process exits).
fn moto_server() -> &'static MotoServer {
    static MOTO: OnceLock<MotoServer> = OnceLock::new();
    MOTO.get_or_init(|| MotoServer::start().expect("starting moto (run scripts/test)"))
}

/// The moto client, the harness that wrote the pristine bucket, and what it wrote.
struct Suite {
    endpoint: String,
    client: aws_sdk_s3::Client,
    h: Harness,
    /// The bucket the ingester wrote.
    pristine: Arc<S3Store>,
    /// In index order.
    segs: Vec<Seg>,
    /// Every leaf hash of the log, by index.
    leaves: Vec<Hash>,
    /// The pending batches the segments seal (key, bytes).
    pending: Vec<(String, Vec<u8>)>,
}

impl Suite {
    /// A fresh Object Lock bucket, written as the ingester writes (create-new, COMPLIANCE
    /// for [`RETENTION`]).
    async fn lock_bucket(&self, bucket: &str) -> Arc<S3Store> {
        lock_bucket_store(&self.client, &self.endpoint, bucket, RETENTION).await
    }

    /// A [`Suite::lock_bucket`] holding a copy of the pristine trail.
    async fn case(&self, bucket: &str) -> Arc<S3Store> {
        let store = self.lock_bucket(bucket).await;
        for s in &self.segs {
            store.put_new(&s.key, &s.bytes).await.unwrap();
        }
        for (key, bytes) in &self.pending {
            store.put_new(key, bytes).await.unwrap();
        }
        store
    }

    async fn verify(&self, store: &Arc<S3Store>, extra: Options) -> Report {
        verify_store(
            store.as_ref(),
            &self.h.trust,
            &Options {
                prefix: PREFIX.into(),
                object_lock: Some(policy(true)),
                ..extra
            },
        )
        .await
        .unwrap()
    }

    /// The attacker: a new current version of `key` (no `If-None-Match`), locked as given.
    async fn overwrite(&self, store: &S3Store, key: &str, bytes: &[u8], lock: Lock) {
        let mut req = self
            .client
            .put_object()
            .bucket(&store.config().bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(bytes.to_vec()));
        let mode_until = match lock {
            Lock::None => None,
            Lock::Compliance(d) => Some((ObjectLockMode::Compliance, d)),
            Lock::Governance(d) => Some((ObjectLockMode::Governance, d)),
        };
        if let Some((mode, d)) = mode_until {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(DateTime::from(SystemTime::now() + d));
        }
        req.send().await.unwrap();
    }

    /// The attacker's "delete": a DELETE without version id, which only adds a delete
    /// marker (the locked version stays, hidden).
    async fn hide(&self, store: &S3Store, key: &str) {
        let out = self
            .client
            .delete_object()
            .bucket(&store.config().bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(out.delete_marker(), Some(true), "{key}");
    }

    async fn versions(&self, store: &S3Store, key: &str) -> usize {
        self.client
            .list_object_versions()
            .bucket(&store.config().bucket)
            .prefix(key)
            .send()
            .await
            .unwrap()
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .count()
    }
}

#[derive(Clone, Copy)]
enum Lock {
    None,
    Compliance(Duration),
    Governance(Duration),
}

const ATTACKER_LOCK: Lock = Lock::Compliance(RETENTION);

fn policy(require_compliance: bool) -> ObjectLockPolicy {
    ObjectLockPolicy {
        min_retention: MIN_RETENTION,
        require_compliance,
    }
}

/// `--signer`: the harness's signer as the outside reference.
fn with_signer(h: &Harness) -> Options {
    Options {
        signer: Some(signer_of(h)),
        ..Options::default()
    }
}

/// `--state`: the state of an earlier run as the outside reference.
fn with_state(state: Option<State>) -> Options {
    Options {
        state,
        ..Options::default()
    }
}

fn kinds(r: &Report) -> Vec<FindingKind> {
    r.findings.iter().map(|f| f.kind).collect()
}

/// Exactly these findings: (kind, object, first index, last index), in any order.
#[track_caller]
fn assert_exactly(r: &Report, want: &[(FindingKind, &str, u64, u64)]) {
    let mut got: Vec<(FindingKind, String, Option<u64>, Option<u64>)> = r
        .findings
        .iter()
        .map(|f| {
            (
                f.kind,
                f.object.clone().unwrap_or_default(),
                f.index,
                f.last_index,
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(FindingKind, String, Option<u64>, Option<u64>)> = want
        .iter()
        .map(|(k, o, a, b)| (*k, o.to_string(), Some(*a), Some(*b)))
        .collect();
    want.sort();
    assert_eq!(got, want, "{}", r.summary());
}

/// A segment with another checkpoint note in its header (kept canonical, as written).
fn with_checkpoint(seg: &Seg, note: &[u8]) -> Vec<u8> {
    let lines = seg.lines();
    let mut v: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
    v["checkpoint"] = String::from_utf8(note.to_vec()).unwrap().into();
    let mut out = sealtrail_core::jcs::canonicalize(v.to_string().as_bytes()).unwrap();
    out.push(b'\n');
    for l in &lines[1..] {
        out.extend_from_slice(l);
    }
    out
}

/// An event line as the writer writes it.
fn record_line(event: &[u8], index: u64, proof: &[Hash]) -> Vec<u8> {
    let proof: Vec<String> = proof
        .iter()
        .map(|h| {
            let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect();
    let mut out = b"{\"event\":".to_vec();
    out.extend_from_slice(event);
    out.extend_from_slice(
        format!(",\"index\":{index},\"proof\":[{}]}}\n", proof.join(",")).as_bytes(),
    );
    out
}

/// The stored (canonical) event of a record line.
fn event_of(line: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    v["event"].clone()
}

fn canonical(v: &serde_json::Value) -> Vec<u8> {
    sealtrail_core::jcs::canonicalize(v.to_string().as_bytes()).unwrap()
}

/// A fresh event (the sample events are from 2018).
fn fresh_event(id: &str, at: time::OffsetDateTime) -> Vec<u8> {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/secrets","verb":"list","user":{{"username":"alice"}},"sourceIPs":["10.0.0.1"],"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#,
        t = at.format(&Rfc3339).unwrap()
    )
    .into_bytes()
}

/// Starts the services writing into a fresh Object Lock bucket `pristine`, replays the 222
/// real events in four rounds, and reads back what was stored. Each round waits for its
/// acknowledgements, so the one-event rounds are segments alone with their checkpoints
/// (the first one older than everything else), the concurrent batches of the big rounds
/// mostly share checkpoints (group commit), and the last round's segments carry the newest
/// checkpoint(s).
async fn setup(pristine: &str) -> Suite {
    let endpoint = moto_server().endpoint.clone();
    let client = s3_client(&endpoint).await;
    let store = lock_bucket_store(&client, &endpoint, pristine, RETENTION).await;
    store.check_object_lock().await.unwrap();
    let h = Harness::start_full(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        None,
        Some((store.clone(), PREFIX.into())),
    )
    .await;
    let lines = event_lines();
    replay(&h, &lines[..1], 40).await;
    replay(&h, &lines[1..180], 40).await;
    replay(&h, &lines[180..181], 40).await;
    replay(&h, &lines[181..], 40).await;
    assert_eq!(h.tree_size().await, 222);

    let mut segs = Vec::new();
    for o in store.list(&format!("{PREFIX}segments/")).await.unwrap() {
        let bytes = store.get(&o.key).await.unwrap();
        let header = segment::parse_header(&bytes).unwrap().0;
        segs.push(Seg {
            key: o.key,
            bytes,
            header,
        });
    }
    segs.sort_by_key(|s| s.first());
    let mut leaves = Vec::new();
    for s in &segs {
        let (_, body) = segment::parse_header(&s.bytes).unwrap();
        for (_, rec) in segment::records(body) {
            let rec = rec.unwrap();
            assert_eq!(rec.index, leaves.len() as u64);
            leaves.push(rec.leaf_hash);
        }
    }
    assert_eq!(leaves.len(), 222);
    let mut pending = Vec::new();
    for o in store.list(&format!("{PREFIX}pending/")).await.unwrap() {
        pending.push((o.key.clone(), store.get(&o.key).await.unwrap()));
    }
    Suite {
        endpoint,
        client,
        h,
        pristine: store,
        segs,
        leaves,
        pending,
    }
}

/// A copy of segment `x` under the same name in the hour partition `hours` away (the key
/// is determined by the content, so any new key is a wrong one): the copy, and only the
/// copy, is reported, as in the wrong partition and as a duplicate.
async fn copied_case(s: &Suite, bucket: &str, x: usize, hours: i64) {
    let store = s.case(bucket).await;
    let seg = &s.segs[x];
    let t = seg.cp().checkpoint.time_ms as i64 + hours * 3_600_000;
    let copy = segment::object_key(PREFIX, t as u64, seg.first(), seg.header.count);
    s.overwrite(&store, &copy, &seg.bytes, ATTACKER_LOCK).await;
    let r = s.verify(&store, Options::default()).await;
    assert_exactly(
        &r,
        &[
            (FindingKind::KeyMismatch, &copy, seg.first(), seg.last()),
            (
                FindingKind::DuplicateSegment,
                &copy,
                seg.first(),
                seg.last(),
            ),
        ],
    );
}

/// The checkpoint in the header of segment `x` replaced by the newest older one (genuine,
/// signed by the trusted key): every event of the segment fails to prove into it, and
/// nothing else is reported (but a key mismatch, if that checkpoint is dated in another
/// hour, which puts the segment in another partition).
async fn old_checkpoint_case(s: &Suite, bucket: &str, x: usize) {
    let store = s.case(bucket).await;
    let seg = &s.segs[x];
    let older = s.segs[..x]
        .iter()
        .rev()
        .find(|g| g.cp().checkpoint.size < seg.cp().checkpoint.size)
        .expect("an older checkpoint");
    s.overwrite(
        &store,
        &seg.key,
        &with_checkpoint(seg, &older.cp().to_bytes()),
        ATTACKER_LOCK,
    )
    .await;
    let r = s.verify(&store, Options::default()).await;
    let mut want: Vec<(FindingKind, &str, u64, u64)> = (seg.first()..=seg.last())
        .map(|i| (FindingKind::LeafMismatch, seg.key.as_str(), i, i))
        .collect();
    let moved = segment::object_key(
        PREFIX,
        older.cp().checkpoint.time_ms,
        seg.first(),
        seg.header.count,
    );
    if moved != seg.key {
        want.push((FindingKind::KeyMismatch, &seg.key, seg.first(), seg.last()));
    }
    assert_exactly(&r, &want);
}

/// How many segments carry the checkpoint of size `size`.
fn carriers(segs: &[Seg], size: u64) -> usize {
    segs.iter()
        .filter(|g| g.cp().checkpoint.size == size)
        .count()
}

/// One trail in S3 Object Lock, many tampered buckets; each tampering is reported with its
/// kind and place, and nothing else is reported for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_in_an_object_lock_bucket_is_caught_and_located() {
    let s = setup("pristine").await;
    let (segs, pristine) = (&s.segs, &s.pristine);
    assert!(segs.len() >= 5, "want several segments, got {}", segs.len());

    // Intact, read only from the bucket, every object's lock checked, with the signer.
    let r = s.verify(pristine, with_signer(&s.h)).await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.events_verified, 222);
    assert_eq!(r.signer_tree_size, Some(222));
    assert!(r.roots_verified >= 2);

    // Batches are split by apiVersion, so some segments hold a single event: tamper with
    // ones that hold several (positions in index order).
    let big: Vec<usize> = (0..segs.len())
        .filter(|&i| segs[i].header.count >= 5)
        .collect();
    assert!(big.len() >= 4, "want four segments of 5+ events");
    let [b0, b1, b2, b3] = [big[0], big[1], big[2], big[3]];

    // One changed byte in a stored event (a letter's case in its "verb"): a new version
    // over the locked one, which stays.
    let store = s.case("t-byte").await;
    let seg = &segs[b0];
    let mut lines: Vec<Vec<u8>> = seg.lines().iter().map(|l| l.to_vec()).collect();
    let line = &mut lines[3]; // the third event
    let at = line.windows(8).position(|w| w == b"\"verb\":\"").unwrap() + 8;
    line[at] ^= 0x20;
    s.overwrite(&store, &seg.key, &lines.concat(), ATTACKER_LOCK)
        .await;
    assert_eq!(s.versions(&store, &seg.key).await, 2);
    let r = s.verify(&store, Options::default()).await;
    let i = seg.first() + 2;
    assert_exactly(&r, &[(FindingKind::LeafMismatch, &seg.key, i, i)]);
    assert_eq!(r.findings[0].line, Some(4));

    // A field changed, keeping valid (and canonical) JSON: who did it.
    let store = s.case("t-field").await;
    let seg = &segs[b1];
    let mut lines: Vec<Vec<u8>> = seg.lines().iter().map(|l| l.to_vec()).collect();
    let mut ev = event_of(&lines[1]);
    let old = ev["user"]["username"].as_str().unwrap().to_string();
    let new = if old == "mallory" { "trent" } else { "mallory" };
    ev["user"]["username"] = new.into();
    let text = String::from_utf8(lines[1].clone()).unwrap();
    let old_event = String::from_utf8(canonical(&event_of(&lines[1]))).unwrap();
    let new_event = String::from_utf8(canonical(&ev)).unwrap();
    assert!(text.contains(&old_event));
    lines[1] = text.replacen(&old_event, &new_event, 1).into_bytes();
    s.overwrite(&store, &seg.key, &lines.concat(), ATTACKER_LOCK)
        .await;
    let r = s.verify(&store, Options::default()).await;
    let i = seg.first();
    assert_exactly(&r, &[(FindingKind::LeafMismatch, &seg.key, i, i)]);

    // A deleted segment: a delete marker hides it (its locked version stays). Without a
    // reference, the gap is located at the object that follows it; with the state of an
    // earlier run, at the deleted key itself.
    let store = s.case("t-deleted").await;
    let earlier = s.verify(&store, Options::default()).await;
    assert!(earlier.intact(), "{}", earlier.summary());
    let seg = &segs[b1];
    s.hide(&store, &seg.key).await;
    assert_eq!(
        s.versions(&store, &seg.key).await,
        1,
        "the locked version stays"
    );
    assert!(matches!(
        store.get(&seg.key).await,
        Err(sealtrail_store::StoreError::NotFound(_))
    ));
    let r = s.verify(&store, Options::default()).await;
    assert_exactly(
        &r,
        &[(
            FindingKind::MissingEvents,
            &segs[b1 + 1].key,
            seg.first(),
            seg.last(),
        )],
    );
    let r = s.verify(&store, with_state(earlier.state.clone())).await;
    assert_exactly(
        &r,
        &[(
            FindingKind::MissingEvents,
            &seg.key,
            seg.first(),
            seg.last(),
        )],
    );
    assert!(r.findings[0].detail.contains("deleted since the last run"));

    // The newest segments deleted (every segment of the newest checkpoint, so that no
    // stored checkpoint covers the lost leaves): the bucket alone looks intact; the signer
    // and the state of an earlier run both catch it.
    let store = s.case("t-truncated").await;
    let earlier = s.verify(&store, with_signer(&s.h)).await;
    assert!(earlier.intact(), "{}", earlier.summary());
    let state = earlier.state.clone().expect("a state after an intact run");
    assert_eq!(state.size, 222);
    let keep = segs
        .iter()
        .position(|g| g.cp().checkpoint.size == 222)
        .unwrap();
    assert!(keep > 0 && segs[keep..].iter().all(|g| g.cp().checkpoint.size == 222));
    let cut = &segs[keep..];
    for g in cut {
        s.hide(&store, &g.key).await;
    }
    let cut_from = cut[0].first();
    let alone = s.verify(&store, Options::default()).await;
    assert!(alone.intact(), "{}", alone.summary());
    // --signer: one finding, the whole cut range, after the last stored segment.
    let r = s.verify(&store, with_signer(&s.h)).await;
    assert_exactly(
        &r,
        &[(
            FindingKind::MissingEvents,
            &segs[keep - 1].key,
            cut_from,
            221,
        )],
    );
    assert!(
        r.findings[0]
            .detail
            .contains("signed by the signer (checkpoint of size 222)"),
        "{}",
        r.summary()
    );
    assert!(r.state.is_none());
    // --state: each deleted object, by key and range.
    let r = s.verify(&store, with_state(Some(state.clone()))).await;
    let want: Vec<(FindingKind, &str, u64, u64)> = cut
        .iter()
        .map(|g| {
            (
                FindingKind::MissingEvents,
                g.key.as_str(),
                g.first(),
                g.last(),
            )
        })
        .collect();
    assert_exactly(&r, &want);
    assert!(
        r.findings
            .iter()
            .all(|f| f.detail.contains("truncated since the last run")),
        "{}",
        r.summary()
    );
    assert_eq!(r.segments_read, 0);
    assert!(r.state.is_none());

    // Two segments swapped: each key gets the other's bytes as a new version.
    let store = s.case("t-swapped").await;
    let (a, b) = (&segs[b0], &segs[b1]);
    s.overwrite(&store, &a.key, &b.bytes, ATTACKER_LOCK).await;
    s.overwrite(&store, &b.key, &a.bytes, ATTACKER_LOCK).await;
    let r = s.verify(&store, Options::default()).await;
    assert_exactly(
        &r,
        &[
            (FindingKind::KeyMismatch, &a.key, b.first(), b.last()),
            (FindingKind::KeyMismatch, &b.key, a.first(), a.last()),
        ],
    );

    // A segment copied under a new key, in the next hour's partition (a key that sorts
    // after the original's; for one that sorts before, see the test below).
    copied_case(&s, "t-copied", b2, 1).await;

    // A forged event with a well-formed proof: an event of b3 replaced by another (new
    // auditID, another user and verb), with the inclusion proof recomputed for the forged
    // leaf in the tree of the segment's checkpoint size. Only the signed root tells.
    let store = s.case("t-forged").await;
    let seg = &segs[b3];
    let mut lines: Vec<Vec<u8>> = seg.lines().iter().map(|l| l.to_vec()).collect();
    let mut ev = event_of(&lines[2]);
    ev["auditID"] = "00000000-0000-4000-8000-000000000bad".into();
    ev["user"] = serde_json::json!({"username": "mallory"});
    ev["verb"] = "get".into();
    let forged = canonical(&ev);
    let i = seg.first() + 1;
    let size = seg.cp().checkpoint.size;
    let mut tree = MemoryLog::new();
    for (j, leaf) in s.leaves[..size as usize].iter().enumerate() {
        tree.append(if j as u64 == i {
            merkle::leaf_hash(&forged)
        } else {
            *leaf
        });
    }
    let proof = tree.inclusion_proof(i, size).unwrap();
    assert_eq!(
        merkle::root_from_inclusion_proof(i, size, &merkle::leaf_hash(&forged), &proof).unwrap(),
        tree.root()
    );
    lines[2] = record_line(&forged, i, &proof);
    s.overwrite(&store, &seg.key, &lines.concat(), ATTACKER_LOCK)
        .await;
    let r = s.verify(&store, Options::default()).await;
    assert_exactly(&r, &[(FindingKind::LeafMismatch, &seg.key, i, i)]);

    // A forged event appended as a new segment after the last one, under the newest
    // checkpoint and with a well-formed proof (that of the last genuine leaf): the index
    // is beyond every signed tree.
    let store = s.case("t-forged-tail").await;
    let last = segs.last().unwrap();
    let n = 222u64;
    let mut forged_seg = last.lines()[0].to_vec();
    let forged_seg_header = String::from_utf8(forged_seg.clone()).unwrap().replacen(
        &format!(
            "\"count\":{},\"first_index\":{},",
            last.header.count,
            last.first()
        ),
        &format!("\"count\":1,\"first_index\":{n},"),
        1,
    );
    assert_ne!(forged_seg_header.as_bytes(), forged_seg.as_slice());
    forged_seg = forged_seg_header.into_bytes();
    let full = {
        let mut t = MemoryLog::new();
        for l in &s.leaves {
            t.append(*l);
        }
        t
    };
    forged_seg.extend(record_line(
        &forged,
        n,
        &full.inclusion_proof(n - 1, n).unwrap(),
    ));
    let forged_key = segment::object_key(PREFIX, last.cp().checkpoint.time_ms, n, 1);
    s.overwrite(&store, &forged_key, &forged_seg, ATTACKER_LOCK)
        .await;
    let r = s.verify(&store, Options::default()).await;
    assert_exactly(&r, &[(FindingKind::LeafMismatch, &forged_key, n, n)]);

    // A checkpoint replaced by an older one, in a segment whose checkpoint other segments
    // (appends committed together) also carry (for a segment alone with its checkpoint,
    // see the test below).
    let shared = (0..segs.len())
        .filter(|&x| carriers(segs, segs[x].cp().checkpoint.size) > 1)
        .filter(|&x| {
            segs[..x]
                .iter()
                .any(|g| g.cp().checkpoint.size < segs[x].cp().checkpoint.size)
        })
        .max_by_key(|&x| segs[x].header.count)
        .expect("a segment sharing its checkpoint, with an older one before it");
    old_checkpoint_case(&s, "t-old-checkpoint", shared).await;

    // A checkpoint re-signed by a key the trust bundle does not list (same note name,
    // another key id), its genuine signature removed.
    let store = s.case("t-unlisted-key").await;
    let seg = &segs[b3];
    let key_path = s.h.dir.path().join("unlisted.key");
    DevKeyFile::generate(&key_path, Algorithm::EcdsaP256Sha256).unwrap();
    let unlisted = DevKeyFile::load(&key_path, true).unwrap();
    let cp = seg.cp();
    let resigned = SignedCheckpoint::new(
        cp.checkpoint.clone(),
        vec![NoteSignature {
            name: cp.checkpoint.origin.clone(),
            key_id: unlisted.public_key().key_id(&cp.checkpoint.origin),
            signature: unlisted.sign(cp.text()).await.unwrap(),
        }],
    )
    .unwrap();
    s.overwrite(
        &store,
        &seg.key,
        &with_checkpoint(seg, &resigned.to_bytes()),
        ATTACKER_LOCK,
    )
    .await;
    let r = s.verify(&store, Options::default()).await;
    let size = cp.checkpoint.size;
    assert_exactly(
        &r,
        &[(FindingKind::UntrustedKey, &seg.key, size - 1, size - 1)],
    );

    // The same bytes re-uploaded without a lock, locked too briefly, and in GOVERNANCE
    // mode: the lock as HeadObject reports it for the current version.
    for (bucket, lock, kind) in [
        ("t-not-locked", Lock::None, FindingKind::NotLocked),
        (
            "t-short-retention",
            Lock::Compliance(DAY * 30),
            FindingKind::RetentionTooShort,
        ),
        (
            "t-governance",
            Lock::Governance(RETENTION),
            FindingKind::GovernanceMode,
        ),
    ] {
        let store = s.case(bucket).await;
        let seg = &segs[b0];
        s.overwrite(&store, &seg.key, &seg.bytes, lock).await;
        let head = store.retention(&seg.key).await.unwrap();
        match lock {
            Lock::None => assert_eq!(head.mode, RetentionMode::None),
            Lock::Compliance(_) => assert_eq!(head.mode, RetentionMode::Compliance),
            Lock::Governance(_) => assert_eq!(head.mode, RetentionMode::Governance),
        }
        let r = s.verify(&store, Options::default()).await;
        assert_exactly(&r, &[(kind, &seg.key, seg.first(), seg.last())]);
        assert_eq!(r.events_verified, 222, "{bucket}");
        if kind == FindingKind::GovernanceMode {
            // Accepted where COMPLIANCE is not required.
            let r = verify_store(
                store.as_ref(),
                &s.h.trust,
                &Options {
                    prefix: PREFIX.into(),
                    object_lock: Some(policy(false)),
                    ..Options::default()
                },
            )
            .await
            .unwrap();
            assert!(r.intact(), "{}", r.summary());
        }
    }

    // A backdated event, sent through the ingester into a bucket of its own: reported as
    // late with its index and key, nothing else.
    let late_store = s.lock_bucket("late-events").await;
    let h2 = Harness::start_full(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        None,
        Some((late_store.clone(), "cluster-2/".into())),
    )
    .await;
    let now = time::OffsetDateTime::now_utc();
    let mut lines: Vec<Vec<u8>> = (0..12)
        .map(|i| fresh_event(&format!("fresh-{i:02}"), now))
        .collect();
    lines.insert(7, fresh_event("backdated", now - time::Duration::hours(2)));
    replay(&h2, &lines, 5).await;
    let r = verify_store(
        late_store.as_ref(),
        &h2.trust,
        &Options {
            prefix: "cluster-2/".into(),
            object_lock: Some(policy(true)),
            signer: Some(signer_of(&h2)),
            late_after: Some(Duration::from_secs(3600)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mut late_at = None;
    for o in late_store.list("cluster-2/segments/").await.unwrap() {
        let bytes = late_store.get(&o.key).await.unwrap();
        let (_, body) = segment::parse_header(&bytes).unwrap();
        for (_, rec) in segment::records(body) {
            let rec = rec.unwrap();
            if rec.audit_id.as_deref() == Some("backdated") {
                late_at = Some((rec.index, o.key.clone()));
            }
        }
    }
    let (late_index, late_key) = late_at.unwrap();
    assert_eq!(kinds(&r), vec![FindingKind::LateEvent], "{}", r.summary());
    assert_exactly(
        &r,
        &[(FindingKind::LateEvent, &late_key, late_index, late_index)],
    );
    h2.shutdown().await;

    s.h.shutdown().await;
}

// A copy whose key sorts before the original's (same index range, an earlier hour
// partition): both findings are on the copy, none on the original (the object whose key
// matches its content holds the range).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_key_sorts_first_is_still_the_one_reported() {
    let s = setup("pristine-copy").await;
    let x = (0..s.segs.len())
        .max_by_key(|&x| s.segs[x].header.count)
        .unwrap();
    copied_case(&s, "bug-copied-earlier", x, -1).await;
    s.h.shutdown().await;
}

// The segment whose checkpoint is replaced by an older one is the only one carrying its
// checkpoint: that checkpoint is then gone from the bucket, and the chain around it breaks.
// The break is explained by the segment whose events no longer prove into its header's
// checkpoint, and reported there only, as `leaf_mismatch` findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_replaced_in_its_only_segment_is_reported_there_only() {
    let s = setup("pristine-chain").await;
    let segs = &s.segs;
    // The one-event round: a segment alone with its checkpoint, by construction.
    let alone = segs.iter().position(|g| g.first() == 180).unwrap();
    assert_eq!(carriers(segs, segs[alone].cp().checkpoint.size), 1);
    old_checkpoint_case(&s, "bug-old-checkpoint-alone", alone).await;
    s.h.shutdown().await;
}
