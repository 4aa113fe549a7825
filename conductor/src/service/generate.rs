//! `POST /v1/generate`: one request's life, from placement through prefill
//! and decode to its last event, with failover when a worker goes away and
//! early rejection before any work is done.

use super::{
    Arc, Body, ChainHash, Channel, Chosen, Code, Infallible, Instant, IntoResponse, Ordering,
    Rejection, Response, Shared, State, StatusCode, Value, WorkerClient, json, limits, mpsc, pb,
    worker_failed,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    tokens: Vec<u32>,
    max_tokens: u32,
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        format!("{value}\n"),
    )
        .into_response()
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn generate(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Response {
    let arrived = Instant::now();
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let request: Generate = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, &format!("body: {error}")),
    };
    if request.tokens.len() > limits::PROMPT_TOKENS || request.max_tokens > limits::OUTPUT_TOKENS {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "at most {} prompt tokens and {} output tokens",
                limits::PROMPT_TOKENS,
                limits::OUTPUT_TOKENS
            ),
        );
    }
    if shared.in_flight.fetch_add(1, Ordering::Relaxed) >= limits::IN_FLIGHT {
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("{} requests in flight already", limits::IN_FLIGHT),
        );
    }
    let in_flight = InFlight(Arc::clone(&shared));
    let hashes = match shared.namespace.hash_tokens(&request.tokens) {
        Ok(hashes) => hashes,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    let pool = match shared.namespace.lookup_hashes(&hashes).await {
        Ok(lookup) => lookup.matched.min(hashes.len()),
        Err(error) => {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {error}"));
        }
    };
    if let Some(span) = shared.count_hot(&hashes[..pool]) {
        let (shared, tokens, hashes) =
            (Arc::clone(&shared), request.tokens.clone(), hashes.clone());
        tokio::spawn(async move {
            if let Ok(copied) = shared.namespace.make_hot(&tokens, &hashes, span).await {
                shared
                    .counters
                    .hot_replicated
                    .fetch_add(u64::from(copied), Ordering::Relaxed);
            }
        });
    }
    let prompt_tokens = request.tokens.len() as u64;
    let chosen = match shared.place(&hashes, pool as u64, prompt_tokens) {
        Ok(chosen) => chosen,
        Err(rejection) => return reject(&shared, rejection),
    };
    let (sender, receiver) = mpsc::channel::<Result<String, Infallible>>(64);
    let job = Job {
        shared,
        request,
        arrived,
        sender,
        failovers: 0,
        pool_blocks: pool as u64,
        hashes,
    };
    tokio::spawn(async move {
        let _in_flight = in_flight;
        job.run(chosen).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
        .unwrap_or_else(|_| error_response(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn reject(shared: &Shared, rejection: Rejection) -> Response {
    shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
    let scale = shared.config.time_scale * 1000.0;
    match rejection {
        Rejection::NoInstance => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no prefill or no decode worker registered",
        ),
        Rejection::Ttft(seconds) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "rejected: predicted TTFT {:.1} ms over the SLO of {:.1} ms",
                seconds * scale,
                shared.config.slo.ttft_seconds * 1000.0
            ),
        ),
        Rejection::Tbt(seconds) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "rejected: predicted TBT {:.1} ms over the SLO of {:.1} ms",
                seconds * scale,
                shared.config.slo.tbt_seconds * 1000.0
            ),
        ),
    }
}

/// One admitted request, from placement to its last token.
struct Job {
    shared: Arc<Shared>,
    request: Generate,
    arrived: Instant,
    sender: mpsc::Sender<Result<String, Infallible>>,
    failovers: u32,
    /// Leading blocks the store held at arrival.
    pool_blocks: u64,
    /// Chain hashes of the prompt's full blocks.
    hashes: Vec<ChainHash>,
}

/// How a stage ended.
enum Stage<T> {
    Done(T),
    /// The worker failed; try elsewhere.
    Retry,
    /// The request failed (the error event is sent).
    Failed,
}

impl Job {
    fn ms(&self) -> f64 {
        self.arrived.elapsed().as_secs_f64() * 1000.0
    }

    async fn send(&self, event: Value) {
        let _ = self.sender.send(Ok(format!("{event}\n"))).await;
    }

    async fn fail(&self, status: &tonic::Status) {
        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.send(json!({
            "event": "error",
            "code": format!("{:?}", status.code()),
            "message": status.message(),
        }))
        .await;
    }

    async fn failover(&mut self, worker: &str, status: &tonic::Status) {
        self.failovers += 1;
        self.shared
            .counters
            .failovers
            .fetch_add(1, Ordering::Relaxed);
        if worker_failed(status) {
            self.shared.drop_worker(worker, status.message());
        }
        self.send(json!({
            "event": "failover",
            "worker": worker,
            "reason": status.message(),
        }))
        .await;
    }

    async fn run(mut self, first: Chosen) {
        let prompt_tokens = self.request.tokens.len() as u64;
        let mut chosen = first;
        let mut attempt = 0;
        let prefilled = loop {
            match self.prefill(&chosen).await {
                Stage::Done(answer) => break answer,
                Stage::Failed => {
                    self.shared.release_decode(&chosen.decode, prompt_tokens);
                    return;
                }
                Stage::Retry => {
                    self.shared.release_decode(&chosen.decode, prompt_tokens);
                }
            }
            attempt += 1;
            let placed = if attempt < limits::ATTEMPTS {
                self.shared
                    .place(&self.hashes, self.pool_blocks, prompt_tokens)
            } else {
                Err(Rejection::NoInstance)
            };
            match placed {
                Ok(next) => chosen = next,
                Err(rejection) => {
                    let status = tonic::Status::unavailable(format!(
                        "no prefill worker could take the request after {attempt} attempts ({rejection:?})"
                    ));
                    self.fail(&status).await;
                    return;
                }
            }
        };
        self.shared
            .counters
            .prompt_blocks
            .fetch_add(u64::from(prefilled.prompt_blocks), Ordering::Relaxed);
        self.shared
            .counters
            .matched_blocks
            .fetch_add(u64::from(prefilled.matched_blocks), Ordering::Relaxed);
        let (mut decode, mut client) = (chosen.decode.clone(), chosen.decode_client.clone());
        for attempt in 1..=limits::ATTEMPTS {
            let stage = self.decode(&decode, client.clone()).await;
            self.shared.release_decode(&decode, prompt_tokens);
            match stage {
                Stage::Done(()) => {
                    self.shared
                        .counters
                        .completed
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Stage::Failed => return,
                Stage::Retry => {}
            }
            match self.shared.replace_decode(prompt_tokens) {
                Some(next) if attempt < limits::ATTEMPTS => (decode, client) = next,
                Some((id, _)) => {
                    self.shared.release_decode(&id, prompt_tokens);
                    break;
                }
                None => break,
            }
        }
        let status = tonic::Status::unavailable("no decode worker could take the request");
        self.fail(&status).await;
    }

    async fn prefill(&mut self, chosen: &Chosen) -> Stage<pb::PrefillResponse> {
        self.send(json!({
            "event": "placed",
            "prefill": chosen.prefill,
            "decode": chosen.decode,
            "predicted_ttft_ms": chosen.placement.ttft_seconds * self.shared.config.time_scale * 1000.0,
            "reused_blocks": chosen.placement.reused_blocks,
            "ms": self.ms(),
        }))
        .await;
        let message = pb::PrefillRequest {
            request_id: format!("{:x}", self.arrived.elapsed().as_nanos()),
            tokens: self.request.tokens.clone(),
        };
        let answer = chosen.prefill_client.clone().prefill(message).await;
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                let hashes: Vec<ChainHash> = answer
                    .chain_hashes
                    .chunks_exact(32)
                    .filter_map(|chunk| <[u8; 32]>::try_from(chunk).ok().map(ChainHash))
                    .collect();
                self.shared.release_prefill(chosen, Some(&hashes));
                self.send(json!({
                    "event": "prefilled",
                    "prompt_blocks": answer.prompt_blocks,
                    "matched_blocks": answer.matched_blocks,
                    "computed_blocks": answer.computed_blocks,
                    "fetched_bytes": answer.fetched_bytes,
                    "put_bytes": answer.put_bytes,
                    "queue_ms": answer.queue_ms,
                    "compute_ms": answer.compute_ms,
                    "ms": self.ms(),
                }))
                .await;
                Stage::Done(answer)
            }
            Err(status) => {
                self.shared.release_prefill(chosen, None);
                if worker_failed(&status) || status.code() == Code::Aborted {
                    self.failover(&chosen.prefill, &status).await;
                    Stage::Retry
                } else {
                    self.fail(&status).await;
                    Stage::Failed
                }
            }
        }
    }

    async fn decode(&mut self, worker: &str, mut client: WorkerClient<Channel>) -> Stage<()> {
        let message = pb::DecodeRequest {
            request_id: String::new(),
            tokens: self.request.tokens.clone(),
            max_tokens: self.request.max_tokens,
        };
        let mut stream = match client.decode(message).await {
            Ok(stream) => stream.into_inner(),
            Err(status) if worker_failed(&status) => {
                self.failover(worker, &status).await;
                return Stage::Retry;
            }
            Err(status) => {
                self.fail(&status).await;
                return Stage::Failed;
            }
        };
        let (mut tokens, mut ttft, mut last, mut tbt_max) = (0u32, None, 0.0f64, 0.0f64);
        let (mut loaded, mut verified) = (0u64, 0u64);
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    let now = self.ms();
                    if ttft.is_none() {
                        ttft = Some(now);
                    } else {
                        tbt_max = tbt_max.max(now - last);
                    }
                    last = now;
                    tokens += 1;
                    loaded += event.loaded_bytes;
                    verified += event.verified_bytes;
                    self.send(json!({
                        "event": "token",
                        "index": event.index,
                        "token": event.token,
                        "ms": now,
                    }))
                    .await;
                }
                Ok(None) => break,
                Err(status) if tokens == 0 && worker_failed(&status) => {
                    self.failover(worker, &status).await;
                    return Stage::Retry;
                }
                Err(status) => {
                    self.fail(&status).await;
                    return Stage::Failed;
                }
            }
        }
        self.shared
            .counters
            .verified_bytes
            .fetch_add(verified, Ordering::Relaxed);
        let tbt_mean = if tokens > 1 {
            (last - ttft.unwrap_or(last)) / f64::from(tokens - 1)
        } else {
            0.0
        };
        self.send(json!({
            "event": "done",
            "tokens": tokens,
            "ttft_ms": ttft.unwrap_or(last),
            "tbt_mean_ms": tbt_mean,
            "tbt_max_ms": tbt_max,
            "loaded_bytes": loaded,
            "verified_bytes": verified,
            "failovers": self.failovers,
            "ms": self.ms(),
            "slo_met": ttft.unwrap_or(last) <= self.shared.config.slo.ttft_seconds * 1000.0
                && tbt_mean <= self.shared.config.slo.tbt_seconds * 1000.0,
        }))
        .await;
        Stage::Done(())
    }
}
