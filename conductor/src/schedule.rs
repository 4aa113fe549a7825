//! Instance selection: Mooncake's Algorithm 1 and the baselines it is
//! compared with, as pure functions of the Conductor's soft state.
//!
//! For each prefill instance the KVCache-aware policy estimates
//! TTFT = queue time + prefill time, where prefill uses the instance's own
//! cached prefix when it is close to the best prefix held anywhere (within
//! the balancing threshold), or else first fetches the best prefix from the
//! instance that holds it (transfer time) and prefills the rest. It takes the
//! instance with the lowest TTFT, then the decode instance with the lowest
//! predicted TBT, and rejects the request early when either misses its SLO.
//! When the instances share a pool (the store), a prefix held there is one
//! more source: any instance can load it at the link's cost.
//! The baselines place every request (they have no early rejection).

use pagoda_cost::Preset;

/// Which scheduler to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Mooncake's Algorithm 1 (cache-aware, with prefix transfer).
    KvCache,
    /// Instances in turn, cache-blind.
    RoundRobin,
    /// The shortest queue, cache-blind.
    LeastLoaded,
    /// The longest local prefix (ties: shortest queue), no transfers.
    LocalOnly,
}

impl Policy {
    /// Parses `kvcache`, `round-robin`, `least-loaded` or `local-only`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "kvcache" => Some(Policy::KvCache),
            "round-robin" => Some(Policy::RoundRobin),
            "least-loaded" => Some(Policy::LeastLoaded),
            "local-only" => Some(Policy::LocalOnly),
            _ => None,
        }
    }
}

/// What the Conductor knows of a prefill instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefillView {
    /// Seconds of work queued ahead of a new request.
    pub queue_seconds: f64,
    /// Leading blocks of this request's prompt the instance holds.
    pub prefix_blocks: u64,
}

/// What the Conductor knows of a decode instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeView {
    /// Context tokens of the sequences it is decoding.
    pub context_tokens: u64,
    /// Sequences it is decoding.
    pub sequences: u32,
    /// Most sequences it may batch.
    pub max_sequences: u32,
}

/// A request to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Tokens per cache block.
    pub block_tokens: u64,
    /// Leading blocks of the prompt in a shared pool that any instance can
    /// load at the link's cost (the store, when instances share one); 0 when
    /// prefixes move only between instances.
    pub pool_blocks: u64,
}

/// Latency objectives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slo {
    /// Time to first token, seconds.
    pub ttft_seconds: f64,
    /// Time between tokens, seconds.
    pub tbt_seconds: f64,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// Prefill instance.
    pub prefill: usize,
    /// Decode instance.
    pub decode: usize,
    /// Blocks of the prompt found cached (locally or fetched).
    pub reused_blocks: u64,
    /// Fetch this many leading blocks from this instance first.
    pub transfer_from: Option<(usize, u64)>,
    /// Load this many leading blocks from the shared pool first.
    pub pool_blocks: u64,
    /// Predicted time to first token.
    pub ttft_seconds: f64,
    /// Predicted time between tokens.
    pub tbt_seconds: f64,
}

/// Why a request was rejected early.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rejection {
    /// No instance of that kind.
    NoInstance,
    /// The best predicted TTFT misses the SLO.
    Ttft(f64),
    /// The best predicted TBT misses the SLO.
    Tbt(f64),
}

/// (instance, predicted TTFT, reused blocks, transfer from, pool blocks).
type Candidate = (usize, f64, u64, Option<(usize, u64)>, u64);

/// Prefix length ratio under which the local prefix is used rather than
/// fetching the best one (Mooncake's `kvcache_balancing_threshold`): a
/// local prefix within this factor of the best is good enough.
pub const BALANCING_THRESHOLD: f64 = 1.25;

/// The prefill side of one placement: the request against the instances.
struct PrefillChoice<'a> {
    model: &'a Preset,
    prefill: &'a [PrefillView],
    request: Request,
    /// Full blocks of the prompt.
    blocks: u64,
}

impl PrefillChoice<'_> {
    /// Tokens of the prompt's first `blocks` blocks.
    fn cached_tokens(&self, blocks: u64) -> u64 {
        (blocks * self.request.block_tokens).min(self.request.prompt_tokens)
    }

    /// Prefilling on instance `index` with the prefix it holds.
    fn local(&self, index: usize) -> Candidate {
        let view = self.prefill[index];
        let reused = view.prefix_blocks.min(self.blocks);
        let cached = self.cached_tokens(reused);
        let seconds = view.queue_seconds
            + self
                .model
                .prefill_seconds(cached, self.request.prompt_tokens - cached);
        (index, seconds, reused, None, 0)
    }

    /// Loading `best` blocks (from `holder`, or the pool) and prefilling the
    /// rest, on instance `index`.
    fn fetched(&self, index: usize, best: u64, holder: Option<usize>) -> Candidate {
        let cached = self.cached_tokens(best);
        let moved = cached * self.model.kv_bytes_per_token();
        let seconds = self.prefill[index].queue_seconds
            + self.model.transfer_seconds(moved)
            + self
                .model
                .prefill_seconds(cached, self.request.prompt_tokens - cached);
        let pool = if holder.is_none() { best } else { 0 };
        (
            index,
            seconds,
            best,
            holder.map(|holder| (holder, best)),
            pool,
        )
    }

    /// The least-loaded instance, prefilling locally.
    fn least_loaded(&self) -> Candidate {
        let prefill = self.prefill;
        let index = (0..prefill.len())
            .min_by(|a, b| {
                prefill[*a]
                    .queue_seconds
                    .total_cmp(&prefill[*b].queue_seconds)
            })
            .unwrap_or(0);
        self.local(index)
    }

    /// The instance with the longest prefix (the less loaded on a tie),
    /// prefilling locally.
    fn local_only(&self) -> Candidate {
        let prefill = self.prefill;
        let index = (0..prefill.len())
            .max_by(|a, b| {
                prefill[*a]
                    .prefix_blocks
                    .cmp(&prefill[*b].prefix_blocks)
                    .then(
                        prefill[*b]
                            .queue_seconds
                            .total_cmp(&prefill[*a].queue_seconds),
                    )
            })
            .unwrap_or(0);
        self.local(index)
    }

    /// Mooncake's Algorithm 1: per instance, its own prefix, or the best
    /// one (an instance's or the pool's) fetched when it is more than
    /// [`BALANCING_THRESHOLD`] longer; the fastest predicted TTFT wins.
    #[expect(clippy::cast_precision_loss, reason = "block counts far below 2^52")]
    fn kvcache(&self) -> Candidate {
        let (best_holder, best_blocks) = self
            .prefill
            .iter()
            .enumerate()
            .map(|(index, view)| (index, view.prefix_blocks.min(self.blocks)))
            .max_by_key(|(index, blocks)| (*blocks, std::cmp::Reverse(*index)))
            .unwrap_or((0, 0));
        let pool_blocks = self.request.pool_blocks.min(self.blocks);
        (0..self.prefill.len())
            .map(|index| {
                let own = self.prefill[index].prefix_blocks.min(self.blocks);
                let close = |best: u64| {
                    best == own || (own > 0 && best as f64 / own as f64 <= BALANCING_THRESHOLD)
                };
                if pool_blocks > best_blocks && !close(pool_blocks) {
                    self.fetched(index, pool_blocks, None)
                } else if close(best_blocks) || index == best_holder {
                    self.local(index)
                } else {
                    self.fetched(index, best_blocks, Some(best_holder))
                }
            })
            .min_by(|a: &Candidate, b: &Candidate| a.1.total_cmp(&b.1))
            .unwrap_or_else(|| self.local(0))
    }
}

/// Decode: the instance whose next step (with this sequence added) is
/// fastest, and that step's seconds.
fn choose_decode(
    model: &Preset,
    decode: &[DecodeView],
    request: Request,
) -> Result<(usize, f64), Rejection> {
    decode
        .iter()
        .enumerate()
        .filter(|(_, view)| view.sequences < view.max_sequences)
        .map(|(index, view)| {
            (
                index,
                model.decode_step_seconds(view.context_tokens + request.prompt_tokens),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or(Rejection::Tbt(f64::INFINITY))
}

/// Whether a placement may refuse a request whose predicted TTFT or TBT
/// misses its SLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Reject early, before any work (Mooncake's overload-oriented
    /// scheduling).
    EarlyReject,
    /// Admit everything; a request late past its SLO still runs.
    AdmitAll,
}

impl Admission {
    /// The rule a policy runs with unless told otherwise: early rejection
    /// for the KVCache-aware scheduler, admit-all for the baselines.
    pub fn default_for(policy: Policy) -> Self {
        if policy == Policy::KvCache {
            Admission::EarlyReject
        } else {
            Admission::AdmitAll
        }
    }
}

/// Places `request` by `policy` under its default admission rule
/// ([`Admission::default_for`]); `turn` drives round-robin.
pub fn place(
    policy: Policy,
    model: &Preset,
    prefill: &[PrefillView],
    decode: &[DecodeView],
    request: Request,
    slo: Slo,
    turn: u64,
) -> Result<Placement, Rejection> {
    let admission = Admission::default_for(policy);
    place_admitting(
        policy, admission, model, prefill, decode, request, slo, turn,
    )
}

/// [`place`] under an explicit admission rule: any policy may reject early
/// (a fair comparison at overload), or admit everything.
#[expect(
    clippy::too_many_arguments,
    reason = "place's arguments and the admission rule"
)]
pub fn place_admitting(
    policy: Policy,
    admission: Admission,
    model: &Preset,
    prefill: &[PrefillView],
    decode: &[DecodeView],
    request: Request,
    slo: Slo,
    turn: u64,
) -> Result<Placement, Rejection> {
    if prefill.is_empty() || decode.is_empty() {
        return Err(Rejection::NoInstance);
    }
    let choice = PrefillChoice {
        model,
        prefill,
        request,
        blocks: request.prompt_tokens / request.block_tokens.max(1),
    };
    let chosen = match policy {
        Policy::RoundRobin => {
            choice.local(usize::try_from(turn % prefill.len() as u64).unwrap_or(0))
        }
        Policy::LeastLoaded => choice.least_loaded(),
        Policy::LocalOnly => choice.local_only(),
        Policy::KvCache => choice.kvcache(),
    };
    let (prefill_index, ttft, reused, transfer_from, pool_blocks) = chosen;
    let (decode_index, tbt) = choose_decode(model, decode, request)?;
    if admission == Admission::EarlyReject {
        if ttft > slo.ttft_seconds {
            return Err(Rejection::Ttft(ttft));
        }
        if tbt > slo.tbt_seconds {
            return Err(Rejection::Tbt(tbt));
        }
    }
    Ok(Placement {
        prefill: prefill_index,
        decode: decode_index,
        reused_blocks: reused,
        transfer_from,
        pool_blocks,
        ttft_seconds: ttft,
        tbt_seconds: tbt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Preset {
        pagoda_cost::preset("llama2-70b-a800").unwrap_or_else(|error| panic!("{error}"))
    }

    const LOOSE: Slo = Slo {
        ttft_seconds: 1e9,
        tbt_seconds: 1e9,
    };

    fn decode() -> Vec<DecodeView> {
        vec![
            DecodeView {
                context_tokens: 400_000,
                sequences: 40,
                max_sequences: 64,
            },
            DecodeView {
                context_tokens: 100_000,
                sequences: 10,
                max_sequences: 64,
            },
        ]
    }

    fn request() -> Request {
        Request {
            prompt_tokens: 16_384,
            block_tokens: 512,
            pool_blocks: 0,
        }
    }

    #[test]
    fn kvcache_prefers_the_cached_prefix_until_the_queue_outweighs_it() {
        let prefill = [
            PrefillView {
                queue_seconds: 0.5,
                prefix_blocks: 30,
            },
            PrefillView {
                queue_seconds: 0.0,
                prefix_blocks: 0,
            },
        ];
        let placed = place(
            Policy::KvCache,
            &model(),
            &prefill,
            &decode(),
            request(),
            LOOSE,
            0,
        )
        .unwrap();
        // Fetching the 30 blocks to the idle instance beats waiting 0.5 s.
        assert_eq!(placed.prefill, 1);
        assert_eq!(placed.transfer_from, Some((0, 30)));
        assert_eq!(placed.reused_blocks, 30);
        assert_eq!(placed.decode, 1, "the lighter decode instance");
        let busy = [
            PrefillView {
                queue_seconds: 0.0,
                prefix_blocks: 30,
            },
            PrefillView {
                queue_seconds: 0.0,
                prefix_blocks: 0,
            },
        ];
        let placed = place(
            Policy::KvCache,
            &model(),
            &busy,
            &decode(),
            request(),
            LOOSE,
            0,
        )
        .unwrap();
        assert_eq!((placed.prefill, placed.transfer_from), (0, None));
        // A local prefix close to the best one is used as is.
        let close = [
            PrefillView {
                queue_seconds: 0.3,
                prefix_blocks: 30,
            },
            PrefillView {
                queue_seconds: 0.0,
                prefix_blocks: 28,
            },
        ];
        let placed = place(
            Policy::KvCache,
            &model(),
            &close,
            &decode(),
            request(),
            LOOSE,
            0,
        )
        .unwrap();
        assert_eq!(
            (placed.prefill, placed.transfer_from, placed.reused_blocks),
            (1, None, 28)
        );
    }

    #[test]
    fn baselines_ignore_the_cache_in_their_own_ways() {
        let prefill = [
            PrefillView {
                queue_seconds: 0.2,
                prefix_blocks: 30,
            },
            PrefillView {
                queue_seconds: 0.1,
                prefix_blocks: 0,
            },
            PrefillView {
                queue_seconds: 0.3,
                prefix_blocks: 10,
            },
        ];
        let m = model();
        let rr: Vec<usize> = (0..4)
            .map(|turn| {
                place(
                    Policy::RoundRobin,
                    &m,
                    &prefill,
                    &decode(),
                    request(),
                    LOOSE,
                    turn,
                )
                .unwrap()
                .prefill
            })
            .collect();
        assert_eq!(rr, vec![0, 1, 2, 0]);
        assert_eq!(
            place(
                Policy::LeastLoaded,
                &m,
                &prefill,
                &decode(),
                request(),
                LOOSE,
                0
            )
            .unwrap()
            .prefill,
            1
        );
        let local = place(
            Policy::LocalOnly,
            &m,
            &prefill,
            &decode(),
            request(),
            LOOSE,
            0,
        )
        .unwrap();
        assert_eq!((local.prefill, local.transfer_from), (0, None));
    }

    /// A prefill instance with 5 s of work queued, and a 2 s TTFT SLO it
    /// cannot meet.
    const BUSY: [PrefillView; 1] = [PrefillView {
        queue_seconds: 5.0,
        prefix_blocks: 0,
    }];
    const TIGHT: Slo = Slo {
        ttft_seconds: 2.0,
        tbt_seconds: 1.0,
    };

    #[test]
    fn any_policy_rejects_early_under_that_rule_and_none_under_admit_all() {
        let (prefill, tight) = (BUSY, TIGHT);
        for policy in [
            Policy::KvCache,
            Policy::RoundRobin,
            Policy::LeastLoaded,
            Policy::LocalOnly,
        ] {
            let placed = |admission| {
                place_admitting(
                    policy,
                    admission,
                    &model(),
                    &prefill,
                    &decode(),
                    request(),
                    tight,
                    0,
                )
            };
            assert!(
                matches!(placed(Admission::EarlyReject), Err(Rejection::Ttft(_))),
                "{policy:?}"
            );
            assert!(placed(Admission::AdmitAll).is_ok(), "{policy:?}");
        }
        assert_eq!(
            Admission::default_for(Policy::KvCache),
            Admission::EarlyReject
        );
        assert_eq!(
            Admission::default_for(Policy::LocalOnly),
            Admission::AdmitAll
        );
    }

    #[test]
    fn requests_that_cannot_meet_their_slo_are_rejected_early() {
        let (prefill, tight) = (BUSY, TIGHT);
        assert!(matches!(
            place(Policy::KvCache, &model(), &prefill, &decode(), request(), tight, 0),
            Err(Rejection::Ttft(ttft)) if ttft > 5.0
        ));
        let prefill = [PrefillView {
            queue_seconds: 0.0,
            prefix_blocks: 0,
        }];
        let tbt = Slo {
            ttft_seconds: 100.0,
            tbt_seconds: 0.001,
        };
        assert!(matches!(
            place(
                Policy::KvCache,
                &model(),
                &prefill,
                &decode(),
                request(),
                tbt,
                0
            ),
            Err(Rejection::Tbt(_))
        ));
        assert_eq!(
            place(
                Policy::KvCache,
                &model(),
                &[],
                &decode(),
                request(),
                LOOSE,
                0
            ),
            Err(Rejection::NoInstance)
        );
        let full = [DecodeView {
            context_tokens: 0,
            sequences: 8,
            max_sequences: 8,
        }];
        assert!(
            place(
                Policy::KvCache,
                &model(),
                &prefill,
                &full,
                request(),
                LOOSE,
                0
            )
            .is_err()
        );
    }

    #[test]
    fn a_prefix_in_the_shared_pool_is_loaded_by_the_idlest_instance() {
        let prefill = [
            PrefillView {
                queue_seconds: 0.5,
                prefix_blocks: 0,
            },
            PrefillView {
                queue_seconds: 0.0,
                prefix_blocks: 0,
            },
        ];
        let shape = Request {
            pool_blocks: 30,
            ..request()
        };
        let placed = place(
            Policy::KvCache,
            &model(),
            &prefill,
            &decode(),
            shape,
            LOOSE,
            0,
        )
        .unwrap();
        assert_eq!(placed.prefill, 1);
        assert_eq!((placed.pool_blocks, placed.transfer_from), (30, None));
        assert_eq!(placed.reused_blocks, 30);
        let cold = place(
            Policy::KvCache,
            &model(),
            &prefill,
            &decode(),
            request(),
            LOOSE,
            0,
        )
        .unwrap();
        assert!(
            placed.ttft_seconds < cold.ttft_seconds,
            "{placed:?} {cold:?}"
        );
        // An instance's own prefix close to the pool's is used as is (the
        // other instance is busy).
        let warm = [
            PrefillView {
                queue_seconds: 0.0,
                prefix_blocks: 28,
            },
            prefill[0],
        ];
        let placed = place(Policy::KvCache, &model(), &warm, &decode(), shape, LOOSE, 0).unwrap();
        assert_eq!((placed.prefill, placed.pool_blocks), (0, 0));
    }
}
