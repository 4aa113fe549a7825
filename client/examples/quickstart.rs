//! Put a prompt's KV blocks into a node and find them again.
//!
//! ```sh
//! pagoda serve &                                   # a node on 127.0.0.1:7420
//! cargo run -p pagoda-client --example quickstart  # [ADDR [TOKEN [TENANT]]]
//! ```
//!
//! Without tenants in its configuration a node serves the single tenant
//! `default` without tokens; with tenants, pass an admin token and its tenant.

use pagoda_client::{Client, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7420".into());
    let token = args.next();
    let tenant = args.next().unwrap_or_else(|| "default".into());
    let client = Client::connect(&addr, token.as_deref()).await?;

    // A namespace: tenant, model, revision and the KV layout of its blocks.
    let layout = KvLayout {
        dtype: Dtype::Bf16,
        kind: KvKind::SeparateKv,
        layer_count: 32,
        kv_head_count: 8,
        head_dim: 128,
        block_tokens: 16,
        tp_rank: 0,
        tp_size: 1,
    };
    let namespace = Namespace::new(tenant, "meta-llama/Llama-3.1-8B", "main", layout)?;
    let id = client.create_namespace(&namespace).await?;
    let ns = client.namespace(id).await?;

    // A prefill worker stores each full block's KV bytes, parent first.
    let prompt: Vec<u32> = (0..56).map(|t| 1000 + t).collect();
    let block_bytes = usize::try_from(layout.block_payload_bytes())?;
    let mut parent = ChainHash::ROOT;
    for (index, tokens) in prompt.chunks_exact(16).enumerate() {
        let kv = vec![u8::try_from(index)?; block_bytes];
        let (hash, outcome) = ns.put(&parent, tokens, &kv).await?;
        println!("block {index}: {outcome:?} ({} bytes)", kv.len());
        assert!(matches!(outcome, PutOutcome::Stored | PutOutcome::Exists));
        parent = hash;
    }

    // The next request with the same prefix asks what is cached ...
    let found = ns.lookup_tokens(&prompt).await?;
    println!(
        "lookup: {} of {} blocks cached, tiers {:?}",
        found.matched,
        found.hashes.len(),
        found.tiers
    );
    // ... and loads it instead of recomputing it.
    for hash in &found.hashes[..found.matched] {
        let kv = ns.get(hash).await?.ok_or("a cached block went missing")?;
        println!("got {} bytes, checksum verified", kv.len());
    }
    Ok(())
}
