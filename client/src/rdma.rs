//! The RDMA path (feature `rdma`): finding verbs devices for the data plane.
//!
//! Pagoda's default transport is plain TCP (gRPC). With `rdma`, a client can
//! move block payloads over RDMA where a verbs device exists. The verbs
//! library (`libibverbs` from rdma-core) is loaded at run time through
//! sideway/rdma-mummy-sys, so this compiles without rdma-core headers and runs
//! on machines without RDMA: there every call here returns an error, never
//! panics, and the client stays on TCP.

use sideway::ibverbs::device::{DeviceInfo, DeviceList};

/// A verbs device found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaDevice {
    /// Device name, e.g. `mlx5_0`.
    pub name: String,
    /// Transport (InfiniBand, iWARP, …) as the verbs library reports it.
    pub transport: String,
}

/// Why no RDMA device can be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RdmaError {
    /// The verbs library could not list devices (rdma-core not installed, or
    /// no kernel support).
    #[error("RDMA unavailable: cannot list verbs devices: {0}")]
    Unavailable(String),
    /// The library works but there is no device.
    #[error("RDMA unavailable: no verbs device on this machine")]
    NoDevice,
}

/// Lists the verbs devices of this machine.
pub fn devices() -> Result<Vec<RdmaDevice>, RdmaError> {
    let list = DeviceList::new().map_err(|error| RdmaError::Unavailable(error.to_string()))?;
    Ok(list
        .iter()
        .map(|device| RdmaDevice {
            name: device.name(),
            transport: format!("{:?}", device.transport_type()),
        })
        .collect())
}

/// The first verbs device, or why there is none.
pub fn first_device() -> Result<RdmaDevice, RdmaError> {
    devices()?.into_iter().next().ok_or(RdmaError::NoDevice)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where there is no RDMA device (this project's CI machines), asking for
    /// one is an error that says so; where there is one, it has a name.
    #[test]
    fn no_device_is_an_error_not_a_panic() {
        let probe = first_device();
        eprintln!("rdma probe: {probe:?}");
        match probe {
            Ok(device) => assert!(!device.name.is_empty()),
            Err(RdmaError::NoDevice) => assert!(devices().unwrap().is_empty()),
            Err(RdmaError::Unavailable(reason)) => assert!(!reason.is_empty()),
        }
    }
}
