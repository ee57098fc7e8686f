//! The small trait that NVML sits behind (`GpuDriver`), the plain types it returns, and its error.
//! The real implementation is `gpu::nvml`; `gpu::scripted` plays a scripted device for tests and
//! benchmarks. Nothing here does I/O.

use crate::issue::IssueKind;
use crate::units::Pid;

/// A physical GPU as discovered, with its MIG instances (empty when MIG is off or unsupported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// NVML index (not necessarily the CUDA index).
    pub index: u32,
    /// `GPU-...`, as the NVIDIA device plugin names the device.
    pub(crate) uuid: String,
    pub(crate) name: String,
    pub(crate) mig: Vec<MigInstance>,
}

/// One MIG device (a GPU instance with its compute instance) of a physical GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MigInstance {
    /// `MIG-...`, as the device plugin's `mixed` strategy names it.
    pub(crate) uuid: String,
    /// Framebuffer size: the instance's share of the GPU (slices are proportional to memory).
    pub(crate) memory_bytes: u64,
}

/// One `nvmlDeviceGetProcessUtilization` sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtilSample {
    pub pid: Pid,
    /// CPU timestamp in microseconds, as NVML reports it.
    pub timestamp_us: u64,
    /// SM (3D/compute) utilisation in percent over the driver's sample period.
    pub sm_util: u32,
}

/// A process with a compute or graphics context on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningProcess {
    pub pid: Pid,
    /// Position in `DeviceInfo::mig` of the MIG instance it runs in; `None` without MIG.
    pub mig_instance: Option<usize>,
}

/// What the exporter needs from NVML, one call per fact, so that a scripted device can stand in.
/// Devices are addressed by their NVML index.
pub trait GpuDriver: Send {
    /// Enumerate the GPUs (and their MIG instances).
    fn devices(&mut self) -> Result<Vec<DeviceInfo>, GpuError>;
    /// Energy since the driver was loaded, in millijoules (Volta and newer; `NotSupported` before).
    fn total_energy_mj(&mut self, index: u32) -> Result<u64, GpuError>;
    /// Current power draw in milliwatts.
    fn power_mw(&mut self, index: u32) -> Result<u32, GpuError>;
    /// Per-process utilisation samples newer than `since_us` (0: all buffered samples).
    /// `NotSupported` where the device cannot sample (MIG mode, old GPUs, some vGPUs).
    fn process_utilization(
        &mut self,
        index: u32,
        since_us: u64,
    ) -> Result<Vec<UtilSample>, GpuError>;
    /// Percent of the driver's last sample period (1/6 s to 1 s) in which a kernel ran on the device
    /// (`nvmlDeviceGetUtilizationRates`); the idle model's utilisation. `NotSupported` where the
    /// device cannot say (some vGPUs, MIG mode).
    fn utilization_percent(&mut self, index: u32) -> Result<u32, GpuError>;
    /// Processes with a compute or graphics context, per MIG instance where MIG is on.
    fn running_processes(&mut self, index: u32) -> Result<Vec<RunningProcess>, GpuError>;
    /// Drop and load the library again (after a driver restart every handle is stale).
    fn reinit(&mut self) -> Result<(), GpuError>;
}

/// An NVML failure, with the call and device it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// `libnvidia-ml.so.1` missing, or `nvmlInit` failed: no GPU support at all.
    #[error("NVML is unavailable: {detail}")]
    Unavailable { detail: String },
    #[error("{call} on GPU {device}: not supported by this device or driver")]
    NotSupported { call: &'static str, device: u32 },
    /// Any other failure of a per-device call, of kind `GpuLost`, `Driver`, ...
    #[error("{call} on GPU {device}: {detail}")]
    Device {
        call: &'static str,
        device: u32,
        kind: IssueKind,
        detail: String,
    },
    /// A failure not tied to one device (enumeration, re-initialisation).
    #[error("{call}: {detail}")]
    Driver {
        call: &'static str,
        kind: IssueKind,
        detail: String,
    },
}

impl GpuError {
    /// The kind counted in `kepler_exporter_source_errors_total{source="gpu",kind}`.
    pub(crate) fn kind(&self) -> IssueKind {
        match self {
            GpuError::Unavailable { .. } => IssueKind::Unavailable,
            GpuError::NotSupported { .. } => IssueKind::NotSupported,
            GpuError::Device { kind, .. } | GpuError::Driver { kind, .. } => *kind,
        }
    }

    /// The driver as a whole is gone (lost GPU, unloaded driver): worth re-initialising NVML.
    pub(crate) fn is_driver_failure(&self) -> bool {
        matches!(
            self.kind(),
            IssueKind::GpuLost | IssueKind::Driver | IssueKind::Unavailable
        )
    }
}
