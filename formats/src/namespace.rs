//! Namespaces: (tenant, model, model revision, KV layout), their canonical
//! encoding and the namespace id derived from it.
//!
//! A [`Namespace`] can only be built valid: its constructor and its decoder
//! check every name rule and range of `formats/SPEC.md` ("Namespaces"), so any
//! `Namespace` value encodes, and its encoding decodes back to the same value.
//! The encoding is canonical: one namespace has exactly one encoding, and the
//! decoder rejects every other byte string, so the id is a function of the
//! namespace alone.

use std::fmt;
use std::str::FromStr;

use crate::codec::{FormatVersion, Reader};
use crate::error::{Error, NameField, Result, Structure};
use crate::hex;
use crate::limits;

/// BLAKE3 `derive_key` context of namespace ids (format version 1).
pub const NAMESPACE_ID_CONTEXT: &str = "pagoda 2026-11-25 namespace id v1";

/// Bytes of the fixed part of the encoding (version and layout).
pub const NAMESPACE_FIXED_SIZE: usize = 24;

/// Longest canonical encoding of a namespace.
pub const NAMESPACE_ENCODED_BYTES_MAX: usize = NAMESPACE_FIXED_SIZE
    + 3
    + limits::TENANT_NAME_BYTES_MAX
    + limits::MODEL_NAME_BYTES_MAX
    + limits::REVISION_BYTES_MAX;

/// Element type of the cached K/V tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32 = 1,
    /// IEEE 754 binary16.
    F16 = 2,
    /// bfloat16.
    Bf16 = 3,
    /// 8-bit float, 4 exponent and 3 mantissa bits.
    Fp8E4m3 = 4,
    /// 8-bit float, 5 exponent and 2 mantissa bits.
    Fp8E5m2 = 5,
    /// 8-bit integers (quantised KV).
    Int8 = 6,
}

const DTYPE_NAMES: &str = "f32, f16, bf16, fp8-e4m3, fp8-e5m2, int8";

impl Dtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::Fp8E4m3 | Dtype::Fp8E5m2 | Dtype::Int8 => 1,
        }
    }

    /// The code stored in the encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a stored code.
    pub fn from_code(code: u8) -> Result<Self> {
        Ok(match code {
            1 => Dtype::F32,
            2 => Dtype::F16,
            3 => Dtype::Bf16,
            4 => Dtype::Fp8E4m3,
            5 => Dtype::Fp8E5m2,
            6 => Dtype::Int8,
            _ => {
                return Err(Error::UnknownCode {
                    field: "dtype",
                    code: u64::from(code),
                });
            }
        })
    }

    /// The name used on command lines and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Fp8E4m3 => "fp8-e4m3",
            Dtype::Fp8E5m2 => "fp8-e5m2",
            Dtype::Int8 => "int8",
        }
    }
}

impl FromStr for Dtype {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        [
            Dtype::F32,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::Fp8E4m3,
            Dtype::Fp8E5m2,
            Dtype::Int8,
        ]
        .into_iter()
        .find(|dtype| dtype.name() == text)
        .ok_or_else(|| Error::UnknownName {
            field: "dtype",
            value: text.to_owned(),
            expected: DTYPE_NAMES,
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a block's K/V are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KvKind {
    /// Separate key and value tensors per layer (multi-head and grouped-query attention).
    SeparateKv = 1,
    /// One compressed latent vector per token and layer (multi-head latent
    /// attention, as in DeepSeek-V2/V3); `kv_head_count` must be 1.
    Latent = 2,
}

const KV_KIND_NAMES: &str = "kv, latent";

impl KvKind {
    /// The code stored in the encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a stored code.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(KvKind::SeparateKv),
            2 => Ok(KvKind::Latent),
            _ => Err(Error::UnknownCode {
                field: "kv kind",
                code: u64::from(code),
            }),
        }
    }

    /// The name used on command lines and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            KvKind::SeparateKv => "kv",
            KvKind::Latent => "latent",
        }
    }
}

impl FromStr for KvKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        [KvKind::SeparateKv, KvKind::Latent]
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| Error::UnknownName {
                field: "kv kind",
                value: text.to_owned(),
                expected: KV_KIND_NAMES,
            })
    }
}

impl fmt::Display for KvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the KV bytes of one block are laid out. Two layouts that differ in any
/// field are different namespaces: their blocks are never interchangeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvLayout {
    /// Element type.
    pub dtype: Dtype,
    /// Separate K/V or a single latent.
    pub kind: KvKind,
    /// Transformer layers, `1..=1024`.
    pub layer_count: u32,
    /// KV heads of the whole model (before tensor-parallel sharding), `1..=1024`; 1 for [`KvKind::Latent`].
    pub kv_head_count: u32,
    /// Elements per head (the latent width for [`KvKind::Latent`]), `1..=16384`.
    pub head_dim: u32,
    /// Tokens per block, `1..=4096`.
    pub block_tokens: u32,
    /// This shard's tensor-parallel rank, `< tp_size`.
    pub tp_rank: u16,
    /// Tensor-parallel group size, `1..=1024`.
    pub tp_size: u16,
}

impl KvLayout {
    /// Llama 3.1 8B in BF16 (32 layers, 8 KV heads of 128), separate K and
    /// V, 16-token blocks, one tensor-parallel rank: the layout of the
    /// examples, benches and tests (and of SPEC.md's worked namespace).
    pub const LLAMA_3_1_8B_BF16: KvLayout = KvLayout {
        dtype: Dtype::Bf16,
        kind: KvKind::SeparateKv,
        layer_count: 32,
        kv_head_count: 8,
        head_dim: 128,
        block_tokens: 16,
        tp_rank: 0,
        tp_size: 1,
    };

    /// Checks every range rule of the layout.
    pub fn validate(&self) -> Result<()> {
        check_range(
            "layer_count",
            self.layer_count.into(),
            1,
            limits::LAYER_COUNT_MAX.into(),
        )?;
        check_range(
            "kv_head_count",
            self.kv_head_count.into(),
            1,
            limits::KV_HEAD_COUNT_MAX.into(),
        )?;
        check_range(
            "head_dim",
            self.head_dim.into(),
            1,
            limits::HEAD_DIM_MAX.into(),
        )?;
        check_range(
            "block_tokens",
            self.block_tokens.into(),
            limits::BLOCK_TOKENS_MIN.into(),
            limits::BLOCK_TOKENS_MAX.into(),
        )?;
        check_range(
            "tp_size",
            self.tp_size.into(),
            1,
            limits::TP_SIZE_MAX.into(),
        )?;
        check_range(
            "tp_rank",
            self.tp_rank.into(),
            0,
            u64::from(self.tp_size) - 1,
        )?;
        if self.kind == KvKind::Latent {
            check_range("kv_head_count", self.kv_head_count.into(), 1, 1)?;
        }
        Ok(())
    }

    /// Nominal payload bytes of one block on this rank: K and V (or the latent)
    /// for every layer, this rank's share of the KV heads (heads are split
    /// evenly, rounded up; a latent is replicated on every rank), `head_dim`
    /// elements, `block_tokens` tokens. Engines may store any payload length
    /// up to the configured cap; this is what a model of this layout produces.
    pub fn block_payload_bytes(&self) -> u64 {
        let (planes, heads_per_rank) = match self.kind {
            KvKind::SeparateKv => (
                2,
                u64::from(self.kv_head_count).div_ceil(u64::from(self.tp_size)),
            ),
            KvKind::Latent => (1, 1),
        };
        planes
            * u64::from(self.layer_count)
            * heads_per_rank
            * u64::from(self.head_dim)
            * u64::from(self.block_tokens)
            * self.dtype.size_bytes()
    }
}

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// A namespace: everything that decides what a cached block means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    tenant: String,
    model: String,
    revision: String,
    layout: KvLayout,
}

impl Namespace {
    /// Builds a namespace, checking every rule of `formats/SPEC.md`.
    pub fn new(
        tenant: impl Into<String>,
        model: impl Into<String>,
        revision: impl Into<String>,
        layout: KvLayout,
    ) -> Result<Self> {
        let namespace = Namespace {
            tenant: tenant.into(),
            model: model.into(),
            revision: revision.into(),
            layout,
        };
        validate_name(NameField::Tenant, namespace.tenant.as_bytes())?;
        validate_name(NameField::Model, namespace.model.as_bytes())?;
        validate_name(NameField::Revision, namespace.revision.as_bytes())?;
        layout.validate()?;
        Ok(namespace)
    }

    /// The tenant that owns the namespace.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model revision.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The KV layout.
    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }

    /// The canonical encoding (`formats/SPEC.md`, "Namespace encoding").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(NAMESPACE_ENCODED_BYTES_MAX);
        let layout = &self.layout;
        out.extend_from_slice(&FormatVersion::CURRENT.number().to_le_bytes());
        out.push(layout.dtype.code());
        out.push(layout.kind.code());
        out.extend_from_slice(&layout.layer_count.to_le_bytes());
        out.extend_from_slice(&layout.kv_head_count.to_le_bytes());
        out.extend_from_slice(&layout.head_dim.to_le_bytes());
        out.extend_from_slice(&layout.block_tokens.to_le_bytes());
        out.extend_from_slice(&layout.tp_rank.to_le_bytes());
        out.extend_from_slice(&layout.tp_size.to_le_bytes());
        debug_assert_eq!(out.len(), NAMESPACE_FIXED_SIZE);
        for name in [&self.tenant, &self.model, &self.revision] {
            let len = u8::try_from(name.len()).expect("validated names are at most 128 bytes");
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
        out
    }

    /// Decodes a canonical encoding; any other input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > NAMESPACE_ENCODED_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "namespace encoding",
                len: bytes.len() as u64,
                max: NAMESPACE_ENCODED_BYTES_MAX as u64,
            });
        }
        let mut reader = Reader::new(bytes, Structure::Namespace);
        reader.version()?;
        let layout = KvLayout {
            dtype: Dtype::from_code(reader.u8()?)?,
            kind: KvKind::from_code(reader.u8()?)?,
            layer_count: reader.u32()?,
            kv_head_count: reader.u32()?,
            head_dim: reader.u32()?,
            block_tokens: reader.u32()?,
            tp_rank: reader.u16()?,
            tp_size: reader.u16()?,
        };
        let tenant = read_name(&mut reader, NameField::Tenant)?;
        let model = read_name(&mut reader, NameField::Model)?;
        let revision = read_name(&mut reader, NameField::Revision)?;
        reader.finish()?;
        Namespace::new(tenant, model, revision, layout)
    }

    /// The namespace id: BLAKE3 `derive_key` of the canonical encoding.
    pub fn id(&self) -> NamespaceId {
        NamespaceId(blake3::derive_key(NAMESPACE_ID_CONTEXT, &self.encode()))
    }
}

fn read_name(reader: &mut Reader<'_>, field: NameField) -> Result<String> {
    let len = reader.u8()?;
    let bytes = reader.take(usize::from(len))?;
    validate_name(field, bytes)?;
    Ok(String::from_utf8(bytes.to_vec()).expect("validated names are ASCII"))
}

/// Checks a name against its rules (`formats/SPEC.md`, "Names"):
///
/// - tenant: 1..=63 bytes of `[a-z0-9_-]`, starting with `[a-z0-9]`;
/// - model: 1..=128 bytes of `[A-Za-z0-9._/-]`, starting with `[A-Za-z0-9]`,
///   with no empty path segment (`//`) and no trailing `/`;
/// - revision: 1..=64 bytes of `[A-Za-z0-9._-]`, starting with `[A-Za-z0-9]`.
pub fn validate_name(field: NameField, name: &[u8]) -> Result<()> {
    let fail = |reason| Error::InvalidName {
        field,
        value: String::from_utf8_lossy(name).into_owned(),
        reason,
    };
    let (max, allowed): (usize, fn(u8) -> bool) = match field {
        NameField::Tenant => (limits::TENANT_NAME_BYTES_MAX, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'
        }),
        NameField::Model => (limits::MODEL_NAME_BYTES_MAX, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/')
        }),
        NameField::Revision => (limits::REVISION_BYTES_MAX, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
        }),
    };
    let Some(&first) = name.first() else {
        return Err(fail("must not be empty"));
    };
    if name.len() > max {
        return Err(fail(match field {
            NameField::Tenant => "longer than 63 bytes",
            NameField::Model => "longer than 128 bytes",
            NameField::Revision => "longer than 64 bytes",
        }));
    }
    if !first.is_ascii_alphanumeric() || (field == NameField::Tenant && first.is_ascii_uppercase())
    {
        return Err(fail(match field {
            NameField::Tenant => "must start with a lower-case letter or a digit",
            _ => "must start with a letter or a digit",
        }));
    }
    if !name.iter().all(|&c| allowed(c)) {
        return Err(fail(match field {
            NameField::Tenant => "allowed characters are a-z 0-9 _ -",
            NameField::Model => "allowed characters are A-Z a-z 0-9 . _ - /",
            NameField::Revision => "allowed characters are A-Z a-z 0-9 . _ -",
        }));
    }
    if field == NameField::Model && (name.windows(2).any(|w| w == b"//") || name.ends_with(b"/")) {
        return Err(fail("must not contain an empty path segment"));
    }
    Ok(())
}

/// A namespace id: 32 bytes, the first half of every block key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespaceId(pub [u8; 32]);

impl NamespaceId {
    /// The id as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        hex::decode_array(text).map(NamespaceId)
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespaceId({self})")
    }
}

#[cfg(test)]
mod tests;
