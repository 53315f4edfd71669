//! One chain run: decide base or link, make it, upload its pieces, read the
//! locks back, publish the manifest, then commit (see the module above).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result, record};
use snap_offsite::{PutOptions, TargetKind, TargetSettings, retain_until};
use snap_pack::chain::Link;

use super::manifest::*;
use super::pieces::{self, PieceName, Upload, days_until, from_unix, rfc3339, unix};
use crate::cost::{self, Held, Ledger};
use crate::{ArchiveConfig, ArchiveRecord, RecipientInfo, StageTime, WorkDir, inventory};

fn load_state(path: &Path) -> std::result::Result<Option<ChainState>, String> {
    match fs::read(path) {
        Ok(b) => match serde_json::from_slice::<ChainState>(&b) {
            Ok(s) if s.format == STATE_FORMAT => Ok(Some(s)),
            Ok(s) => Err(format!(
                "chain state format {} is not {STATE_FORMAT}",
                s.format
            )),
            Err(e) => Err(format!(
                "chain state {} is unreadable ({e})",
                path.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("chain state {}: {e}", path.display())),
    }
}

/// Why this run must start a new chain (None: add a link).
fn rebase_reason(
    state: &Option<ChainState>,
    cfg: &ArchiveConfig,
    fingerprints: &[String],
    now: SystemTime,
    dir: &Path,
) -> Option<String> {
    let Some(s) = state else {
        return Some("no chain yet".into());
    };
    let c = &cfg.chain;
    if !dir.join(&s.index).is_file() {
        return Some(format!("the chain index {} is missing", s.index));
    }
    if s.compressor != cfg.pack.compressor
        || s.level != cfg.pack.level
        || s.block_size != cfg.pack.block_size
        || s.servers != cfg.servers
    {
        return Some("the pack settings or the servers changed".into());
    }
    if s.recipients != fingerprints {
        return Some("the recipients changed".into());
    }
    let age = (unix(now) - s.created) as f64 / 86_400.0;
    if age >= f64::from(c.max_age_days) {
        return Some(format!(
            "the chain is {age:.1} days old (max_age_days {})",
            c.max_age_days
        ));
    }
    if let Some(l) = s.links.last()
        && l.dead_ratio >= c.max_dead_ratio
    {
        return Some(format!(
            "{:.0} % of the image's data is dead (max_dead_ratio {})",
            l.dead_ratio * 100.0,
            c.max_dead_ratio
        ));
    }
    match retain_until(now, cfg.retain_days) {
        Ok(t) if unix(t) <= s.data_retain_until => None,
        _ => Some("the chain's planned locks end before another link's would".into()),
    }
}

fn stage(name: &str, sink: &Option<Arc<dyn ProgressSink>>, total: Option<u64>) -> Progress {
    Progress::new(name, total, sink.clone())
}

/// Does the link the index made continue the chain `state` records?
fn continues(link: &Link, state: &ChainState) -> bool {
    link.number as usize == state.links.len()
        && state.links.iter().zip(&link.links).all(|(s, l)| {
            s.number == l.number && s.data_end == l.data_end && s.data_sha256 == l.data_sha256
        })
}

/// Run one chain link (or base) of the archive pipeline.
pub fn run_chain(
    cfg: &ArchiveConfig,
    run_id: &str,
    sink: Option<Arc<dyn ProgressSink>>,
    rec: &mut ArchiveRecord,
) -> Result<()> {
    let recipients = cfg.load_recipients()?;
    let fingerprints: Vec<String> = recipients.iter().map(|r| r.fingerprint.clone()).collect();
    let inv = inventory(&cfg.history_dir, cfg.servers.as_deref())?;
    let target_cfg = TargetSettings::from_value(cfg.target.clone())?.to_config()?;
    if target_cfg.kind == TargetKind::GlacierVault {
        return Err(Error::invalid_input(
            "chains need an S3 target with Object Lock (a Glacier vault cannot read locks back per object); \
             set snap:archive:chain:enabled to False for a vault",
        ));
    }
    let target = snap_offsite::open_target(&target_cfg)?;
    let t = target.as_ref();
    let prefix = cfg.prefix();
    rec.aborted_stale = snap_offsite::abort_stale(t, &prefix, Duration::ZERO)?
        .into_iter()
        .map(|u| format!("{} ({})", u.key, u.upload_id))
        .collect();
    let dir = cfg.state_dir.join("chain");
    record::ensure_dir(&dir, 0o700)?;
    let state_path = dir.join("state.json");
    let (old, unreadable) = match load_state(&state_path) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(e)),
    };
    let now = SystemTime::now();
    let link_until = retain_until(now, cfg.retain_days)?;
    let mut reason = unreadable.or_else(|| rebase_reason(&old, cfg, &fingerprints, now, &dir));
    if reason.is_none() {
        // The chain's data pieces must outlast this link: read their locks.
        for p in &old.as_ref().expect("a chain").data_pieces {
            match pieces::read_lock(t, &p.key, p.version_id.as_deref()) {
                Ok((Some(m), Some(u))) if m == "COMPLIANCE" && u >= link_until => {}
                Ok((m, u)) => {
                    reason = Some(format!(
                        "piece {} is locked {} until {}, less than a new link needs",
                        p.name,
                        m.unwrap_or_else(|| "in no mode".into()),
                        u.map_or_else(|| "never".into(), rfc3339)
                    ));
                    break;
                }
                Err(e) => return Err(Error::new(e.kind(), format!("piece {}: {e}", p.name))),
            }
        }
    }

    // 1. The link (or base), written to the run's root-only work directory.
    let work = WorkDir::create(&cfg.work_dir, run_id)?;
    let tail = work.0.join("tail.sqfs");
    let opts = cfg.pack_options()?;
    let p = stage("pack", &sink, None);
    let mut made = None;
    if reason.is_none() {
        let s = old.as_ref().expect("a chain");
        let link = snap_pack::chain::link(
            &cfg.history_dir,
            &dir.join(&s.index),
            false,
            &tail,
            &opts,
            &p,
        )?;
        if continues(&link, s) {
            made = Some((link, s.clone()));
        } else {
            drop(link);
            fs::remove_file(&tail).map_err(|e| Error::io_path("removing", &tail, e))?;
            reason = Some("the local chain state disagrees with the chain index".into());
        }
    }
    let (mut link, mut state) = match made {
        Some(m) => m,
        None => {
            let key_prefix = snap_offsite::archive_key(&format!("{prefix}/chain"), now, "")?;
            let id = key_prefix.rsplit('/').next().unwrap_or("chain").to_string();
            let planned = retain_until(now, cfg.retain_days + cfg.chain.max_age_days)?;
            let index = format!("{id}.index");
            let link = snap_pack::chain::link(
                &cfg.history_dir,
                &dir.join(&index),
                true,
                &tail,
                &opts,
                &p,
            )?;
            let state = ChainState {
                format: STATE_FORMAT.into(),
                id,
                key_prefix,
                created: unix(now),
                data_retain_until: unix(planned),
                compressor: cfg.pack.compressor.clone(),
                level: cfg.pack.level,
                block_size: cfg.pack.block_size,
                servers: cfg.servers.clone(),
                recipients: fingerprints.clone(),
                index,
                data_pieces: Vec::new(),
                links: Vec::new(),
            };
            (link, state)
        }
    };
    let sum = link.summary.clone();
    rec.stages.push(StageTime {
        stage: "pack".into(),
        bytes: sum.bytes_read,
        seconds: sum.duration.as_secs_f64(),
    });

    // 2. The pieces: data (kept by every later link), then meta.
    let n = link.number;
    let this = link.links.last().expect("the link itself").clone();
    let (start, data_end, size) = (this.start, this.data_end, this.size);
    let dlen = data_end - start;
    let tables = size - data_end;
    let up_progress = stage("upload", &sink, Some(size - start + SUPERBLOCK));
    let mut ledger = Ledger::load(&cfg.state_dir)?;
    let held = |p: &ChainPiece| Held {
        key: p.key.clone(),
        size: p.size,
        storage_class: p.storage_class.clone(),
        retain_until: p.retain_until_unix.unwrap_or(0),
    };
    let base_put = PutOptions::archive().with_storage_class(cfg.storage_class.clone());
    let data_days = days_until(
        SystemTime::now(),
        from_unix(state.data_retain_until),
        cfg.retain_days,
    );
    let up = Upload {
        target: t,
        recipients: &recipients,
        put: base_put.clone().with_retain_days(data_days),
        progress: &up_progress,
    };
    let open = || File::open(&tail).map_err(|e| Error::io_path("opening", &tail, e));
    let data_from = if start == 0 { SUPERBLOCK } else { 0 };
    let name = format!("link-{n:04}.data");
    let key = snap_offsite::archive_key(
        &state.key_prefix,
        SystemTime::now(),
        &format!(".link-{n:04}.data.sqfs.gpg"),
    )?;
    let f = open()?;
    let id = PieceName {
        name: &name,
        link: n,
        kind: "data",
        key: &key,
    };
    let mut data = pieces::upload(&up, &id, (&f).take(dlen), dlen, &[(data_from, dlen)])
        .map_err(|e| {
            if e.kind() != ErrorKind::Refused {
                return e;
            }
            // The bucket policy caps retention at retain_days + max_age_days
            // + 7 as provisioned: a larger max_age_days (its default grew
            // from 90 to 180) needs the cap raised first.
            Error::new(
                ErrorKind::Refused,
                format!(
                    "{e} (a data piece is locked {data_days} days, for the chain's whole life: if the bucket \
                     policy's cap on retention is lower, raise it with salt-run snap.provision, which sets it \
                     to retain_days + snap:archive:chain:max_age_days + 7, or lower max_age_days)"
                ),
            )
        })?;
    data.piece.retain_until_unix = Some(state.data_retain_until);
    ledger.add([held(&data.piece)], SystemTime::now())?;
    if data.range_sha256[0] != this.data_sha256 {
        return Err(Error::internal(format!(
            "piece {name}: its data hashes to {}, the chain index recorded {}",
            data.range_sha256[0], this.data_sha256
        )));
    }
    let mut f = open()?;
    f.seek(SeekFrom::Start(dlen))
        .map_err(|e| Error::io_path("reading", &tail, e))?;
    let sb = link.superblock;
    let meta_len = tables + SUPERBLOCK;
    let up = Upload {
        put: base_put.with_retain_days(cfg.retain_days),
        ..up
    };
    let name = format!("link-{n:04}.meta");
    let key = snap_offsite::archive_key(
        &state.key_prefix,
        SystemTime::now(),
        &format!(".link-{n:04}.meta.sqfs.gpg"),
    )?;
    let id = PieceName {
        name: &name,
        link: n,
        kind: "meta",
        key: &key,
    };
    let mut meta = pieces::upload(
        &up,
        &id,
        (&mut f).take(tables).chain(&sb[..]),
        meta_len,
        &[(0, tables), (tables, meta_len)],
    )?;
    let u = up_progress.finish();
    rec.stages.push(StageTime {
        stage: "encrypt+upload".into(),
        bytes: u.bytes,
        seconds: u.elapsed.as_secs_f64(),
    });
    drop(f);

    // 3. Every lock the link relies on, read back.
    let restorable = pieces::require_lock(
        t,
        &meta.piece.key,
        meta.piece.version_id.as_deref(),
        link_until,
        &meta.piece.name,
    )?;
    let lock = |p: &mut ChainPiece, at_least: SystemTime| -> Result<()> {
        let got = pieces::require_lock(t, &p.key, p.version_id.as_deref(), at_least, &p.name)?;
        p.lock_mode = Some("COMPLIANCE".into());
        p.retain_until = Some(rfc3339(got));
        p.retain_until_unix = Some(unix(got));
        Ok(())
    };
    lock(&mut meta.piece, restorable)?;
    ledger.add([held(&meta.piece)], SystemTime::now())?;
    let mut needed = state.data_pieces.clone();
    needed.push(data.piece.clone());
    for p in &mut needed {
        lock(p, restorable).map_err(|e| {
            if e.kind() != ErrorKind::Refused {
                return e;
            }
            // Ceph RGW 16 gives a multipart upload the bucket's default
            // retention, whatever snap asked: a bucket provisioned without
            // chains (91 days) cannot hold a chain's data piece.
            Error::new(
                ErrorKind::Refused,
                format!(
                    "{e} (a chain's data piece must stay locked for the chain's whole life: on a server \
                     that gives multipart uploads the bucket's default retention, such as Ceph RGW, raise \
                     that default with salt-run snap.provision, which sets it to retain_days + \
                     snap:archive:chain:max_age_days + 2 days, or set snap:archive:chain:enabled to False)"
                ),
            )
        })?;
    }

    // 4. The image, range by range.
    let mut ranges = vec![ImageRange {
        offset: 0,
        len: SUPERBLOCK,
        piece: meta.piece.name.clone(),
        piece_offset: tables,
        sha256: meta.range_sha256[1].clone(),
    }];
    for (l, p) in link.links.iter().zip(&needed) {
        let from = l.start.max(SUPERBLOCK);
        ranges.push(ImageRange {
            offset: from,
            len: l.data_end - from,
            piece: p.name.clone(),
            piece_offset: from - l.start,
            sha256: l.data_sha256.clone(),
        });
    }
    ranges.push(ImageRange {
        offset: data_end,
        len: tables,
        piece: meta.piece.name.clone(),
        piece_offset: 0,
        sha256: meta.range_sha256[0].clone(),
    });
    let mut all_pieces = needed.clone();
    all_pieces.push(meta.piece.clone());

    // 5. The manifest: the whole chain, locked as long as the link.
    let prices = cost::prices(&cfg.prices)?;
    let storage = cost::estimate(&ledger.held, SystemTime::now(), &prices);
    let by_dir: BTreeMap<String, (Vec<String>, i64)> = inv
        .iter()
        .map(|s| (s.name.clone(), (s.servers.clone(), s.mtime)))
        .collect();
    let snapshots: Vec<ChainSnapshot> = link
        .snapshots
        .iter()
        .map(|s| {
            let dir = s.dir.to_string_lossy().into_owned();
            ChainSnapshot {
                name: s.name.clone(),
                servers: by_dir.get(&dir).map(|d| d.0.clone()).unwrap_or_default(),
                mtime: s.time.0,
                dir,
            }
        })
        .collect();
    let servers: BTreeSet<String> = snapshots
        .iter()
        .flat_map(|s| s.servers.iter().cloned())
        .collect();
    let manifest_key = snap_offsite::archive_key(
        &state.key_prefix,
        SystemTime::now(),
        &format!(".link-{n:04}{CHAIN_MANIFEST_SUFFIX}"),
    )?;
    let manifest = ChainManifest {
        key: Some(manifest_key.clone()),
        format: CHAIN_MANIFEST_FORMAT.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created: rfc3339(now),
        backup_server: cfg.minion_id.clone(),
        chain: ChainInfo {
            id: state.id.clone(),
            base_created: record::format_unix(state.created),
            link: n,
            rebase_reason: if n == 0 { reason.clone() } else { None },
            max_age_days: cfg.chain.max_age_days,
            max_dead_ratio: cfg.chain.max_dead_ratio,
            restorable_until: Some(rfc3339(restorable)),
            data_retain_until: record::format_unix(state.data_retain_until),
        },
        image: ChainImage {
            format: "squashfs".into(),
            size,
            compressor: cfg.pack.compressor.clone(),
            level: cfg.pack.level,
            block_size: cfg.pack.block_size,
            new_files: sum.new_files,
            bytes_read: sum.bytes_read,
            reused_files: sum.reused_files,
            reused_bytes: sum.reused_bytes,
            unkeyed_files: sum.unkeyed_files,
            tail_bytes: sum.tail_bytes,
            data_bytes: sum.data_bytes,
            live_bytes: sum.live_bytes,
            dead_bytes: sum.dead_bytes,
            dead_ratio: sum.dead_ratio,
            seconds: sum.duration.as_secs_f64(),
        },
        pieces: all_pieces,
        ranges,
        recipients: recipients
            .iter()
            .map(|r| RecipientInfo {
                fingerprint: r.fingerprint.clone(),
                key_id: r.key_id.clone(),
                algorithm: r.algorithm.clone(),
                user_ids: r.user_ids.clone(),
            })
            .collect(),
        servers: servers.into_iter().collect(),
        snapshots,
        history_root: cfg.history_dir.display().to_string(),
        storage,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::internal(format!("encoding the manifest: {e}")))?;
    let mput = PutOptions::manifest()
        .with_storage_class(cfg.manifest_storage_class.clone())
        .with_retain_days(cfg.retain_days)
        .with_description(format!("snap chain manifest, link {n} of {}", state.id));
    let stored = t.put_small(&manifest_key, &text, &mput)?;
    let m_until = pieces::require_lock(
        t,
        &stored.key,
        stored.version_id.as_deref(),
        restorable,
        "the manifest",
    )?;
    ledger.add(
        [Held {
            key: stored.key.clone(),
            size: stored.size,
            storage_class: cfg.manifest_storage_class.clone(),
            retain_until: unix(m_until),
        }],
        SystemTime::now(),
    )?;
    drop(work); // the plaintext tail is gone before the chain moves on

    // 6. Commit: the index, then the local state.
    link.commit()?;
    let old_index = old
        .as_ref()
        .filter(|o| o.id != state.id)
        .map(|o| dir.join(&o.index));
    state.data_pieces = needed;
    state.links.push(LinkState {
        number: n,
        created: unix(now),
        manifest_key: stored.key.clone(),
        data_end,
        data_sha256: this.data_sha256.clone(),
        dead_ratio: sum.dead_ratio,
        tail_bytes: sum.tail_bytes,
    });
    record::write_json(&state_path, &state)?;
    if let Some(p) = old_index {
        let _ = fs::remove_file(p);
    }
    let local = cfg.state_dir.join("manifests");
    record::ensure_dir(&local, 0o700)?;
    let file = stored.key.rsplit('/').next().unwrap_or(&stored.key);
    record::write_json(&local.join(file), &manifest)?;
    rec.manifest_key = Some(stored.key);
    rec.storage = Some(cost::estimate(&ledger.held, SystemTime::now(), &prices));
    rec.chain = Some(manifest);
    Ok(())
}
