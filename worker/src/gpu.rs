//! The CUDA path (feature `cuda`): device memory for KV blocks.
//!
//! cudarc loads `libcuda.so` at run time (`dynamic-loading`), so this module
//! compiles on machines without a driver. Creating a context on such a machine
//! would panic inside cudarc, so [`GpuDevice::open`] checks for the library
//! first and returns [`Error::NoCudaDriver`] instead.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::Error;

/// One CUDA device with a stream for copies.
#[derive(Debug)]
pub struct GpuDevice {
    ordinal: usize,
    stream: Arc<CudaStream>,
}

/// Whether a CUDA driver library can be loaded here.
pub fn driver_present() -> bool {
    #[expect(unsafe_code, reason = "cudarc marks probing for libcuda as unsafe")]
    // SAFETY: `is_culib_present` only tries `dlopen` on the CUDA driver's
    // library names and drops the handle. Loading runs the library's
    // initialisers, which for the NVIDIA driver are the same ones every CUDA
    // program runs (cudarc's own `culib()` loads it the same way); nothing
    // else is called and no state of ours is touched.
    unsafe {
        cudarc::driver::sys::is_culib_present()
    }
}

impl GpuDevice {
    /// Opens device `ordinal`; an error (never a panic) when there is no driver
    /// or no such device.
    pub fn open(ordinal: usize) -> Result<Self, Error> {
        if !driver_present() {
            return Err(Error::NoCudaDriver);
        }
        let context = CudaContext::new(ordinal).map_err(|error| Error::Cuda {
            operation: "create context",
            message: error.to_string(),
        })?;
        Ok(GpuDevice {
            ordinal,
            stream: context.default_stream(),
        })
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Copies `bytes` to device memory and back: the path a KV block takes
    /// between the store and the GPU, end to end.
    pub fn round_trip(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        let cuda = |operation| {
            move |error: cudarc::driver::DriverError| Error::Cuda {
                operation,
                message: error.to_string(),
            }
        };
        let device = self
            .stream
            .clone_htod(bytes)
            .map_err(cuda("copy to device"))?;
        self.stream
            .clone_dtoh(&device)
            .map_err(cuda("copy to host"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a driver, opening a device is an error naming the
    /// cause; with a driver, bytes survive the trip through device memory.
    #[test]
    fn open_fails_cleanly_without_a_driver_and_round_trips_with_one() {
        match GpuDevice::open(0) {
            Err(Error::NoCudaDriver) => assert!(!driver_present()),
            Err(other) => panic!("a driver is present but device 0 failed: {other}"),
            Ok(device) => {
                let bytes: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
                assert_eq!(device.round_trip(&bytes).unwrap(), bytes);
            }
        }
    }
}
