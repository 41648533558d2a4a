//! The GPU miner: `kernels/por.wgsl` on wgpu (Vulkan), the only module that imports `wgpu`.
//!
//! The segment is uploaded once (as big-endian words); each dispatch tries `count` counters,
//! one per invocation, and shares come back through a small buffer. The SHA-256 compression is
//! generated here — 64 unrolled rounds with literal constants — and spliced into the kernel.
//! Every share the GPU reports is re-checked on the CPU with the rule before it is returned.

use super::{nonce_bytes, share_hash, strip_positions, STRIP_LEN};
use crate::crypto::hash::raw::K;
use alloy_primitives::{Address, B256};
use thiserror::Error;
use wgpu::util::DeviceExt;

/// The kernel template.
const KERNEL: &str = include_str!("../../kernels/por.wgsl");
/// Shares one dispatch can report; more are counted and the dispatch is reported as
/// overflowing (raise the difficulty).
pub const SHARE_CAPACITY: u32 = 1024;
/// Default invocations per workgroup (tuning/ overrides it per device class).
pub const DEFAULT_WORKGROUP_SIZE: u32 = 256;

/// Why the GPU path is unavailable or failed.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter (install a Vulkan driver; in CI, mesa-vulkan-drivers gives lavapipe): {0}"
    )]
    NoAdapter(String),
    #[error("device request failed: {0}")]
    Device(String),
    #[error("segment must hold at least one strip and fit the device ({0} bytes)")]
    Segment(usize),
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error("a dispatch found {0} shares, more than it can report: raise the difficulty")]
    Overflow(u32),
    #[error("workgroup size {size} is outside 1..={max} on this adapter")]
    WorkgroupSize { size: u32, max: u32 },
    #[error("a dispatch of {count} counters needs more than {max_groups} workgroups of {workgroup_size} on this adapter: lower the batch")]
    Batch {
        count: u32,
        workgroup_size: u32,
        max_groups: u32,
    },
}

/// The generated body of `fn compress(state, w) -> state`.
pub fn compress_wgsl() -> String {
    let mut s = String::from(
        "fn compress(state: array<u32, 8>, block: array<u32, 16>) -> array<u32, 8> {\n    var w = block;\n",
    );
    s += "    var a = state[0]; var b = state[1]; var c = state[2]; var d = state[3];\n";
    s += "    var e = state[4]; var f = state[5]; var g = state[6]; var h = state[7];\n";
    s += "    var t1: u32; var t2: u32;\n";
    for (t, k) in K.iter().enumerate() {
        let wt = t % 16;
        if t >= 16 {
            let (w2, w7, w15) = ((t - 2) % 16, (t - 7) % 16, (t - 15) % 16);
            s += &format!(
                "    w[{wt}] = w[{wt}] + (rotr(w[{w2}], 17u) ^ rotr(w[{w2}], 19u) ^ (w[{w2}] >> 10u)) + w[{w7}] + (rotr(w[{w15}], 7u) ^ rotr(w[{w15}], 18u) ^ (w[{w15}] >> 3u));\n"
            );
        }
        s += &format!(
            "    t1 = h + (rotr(e, 6u) ^ rotr(e, 11u) ^ rotr(e, 25u)) + ((e & f) ^ (~e & g)) + 0x{k:08x}u + w[{wt}];\n"
        );
        s += "    t2 = (rotr(a, 2u) ^ rotr(a, 13u) ^ rotr(a, 22u)) + ((a & b) ^ (a & c) ^ (b & c));\n";
        s += "    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;\n";
    }
    s += "    return array<u32, 8>(state[0] + a, state[1] + b, state[2] + c, state[3] + d,\n";
    s += "                         state[4] + e, state[5] + f, state[6] + g, state[7] + h);\n}\n";
    s
}

/// The kernel source for a workgroup size.
pub fn kernel_source(workgroup_size: u32) -> String {
    KERNEL
        .replace("//{{COMPRESS}}", &compress_wgsl())
        .replace("WORKGROUP_SIZE", &workgroup_size.to_string())
}

/// A GPU ready to mine one segment.
pub struct GpuMiner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    segment: wgpu::Buffer,
    out: wgpu::Buffer,
    readback: wgpu::Buffer,
    positions: u32,
    segment_bytes: Vec<u8>,
    workgroup_size: u32,
    /// Largest workgroup the device runs (size x and invocations per workgroup).
    max_workgroup_size: u32,
    /// Most workgroups one dispatch may name along x.
    max_workgroups: u32,
    adapter: String,
}

/// The adapter `GpuMiner::new` would pick: `HighPerformance` on Vulkan.
fn request_adapter() -> Result<wgpu::Adapter, GpuError> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| GpuError::NoAdapter(e.to_string()))
}

fn describe(adapter: &wgpu::Adapter) -> String {
    let info = adapter.get_info();
    format!("{} ({:?}, {})", info.name, info.device_type, info.driver)
}

/// The name `GpuMiner::adapter` would report, without opening a device (to pick a tuning
/// profile before mining).
pub fn adapter_name() -> Result<String, GpuError> {
    request_adapter().map(|a| describe(&a))
}

/// Compiles the kernel for `workgroup_size`; shader and pipeline errors come back as values,
/// not wgpu's default panic.
fn compile(
    device: &wgpu::Device,
    workgroup_size: u32,
) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout), GpuError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("por.wgsl"),
        source: wgpu::ShaderSource::Wgsl(kernel_source(workgroup_size).into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("por"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(GpuError::Device(format!("kernel does not compile: {e}")));
    }
    let layout = pipeline.get_bind_group_layout(0);
    Ok((pipeline, layout))
}

impl GpuMiner {
    /// Picks the best adapter, compiles the kernel and uploads `segment`.
    pub fn new(segment: &[u8], workgroup_size: u32) -> Result<Self, GpuError> {
        if segment.len() < STRIP_LEN || !segment.len().is_multiple_of(4) {
            return Err(GpuError::Segment(segment.len()));
        }
        let positions = u32::try_from(strip_positions(segment.len()))
            .map_err(|_| GpuError::Segment(segment.len()))?;
        let adapter = request_adapter()?;
        let adapter_name = describe(&adapter);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kaon-por"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let limits = device.limits();
        let max_workgroup_size = limits
            .max_compute_workgroup_size_x
            .min(limits.max_compute_invocations_per_workgroup);
        if workgroup_size == 0 || workgroup_size > max_workgroup_size {
            return Err(GpuError::WorkgroupSize {
                size: workgroup_size,
                max: max_workgroup_size,
            });
        }
        let (pipeline, layout) = compile(&device, workgroup_size)?;
        let words: Vec<u8> = segment
            .chunks_exact(4)
            .flat_map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]).to_le_bytes())
            .collect();
        let segment_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("segment"),
            contents: &words,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let out_size = u64::from(4 * (1 + 2 * SHARE_CAPACITY));
        let out = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("shares"),
            size: out_size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("shares-readback"),
            size: out_size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        tracing::info!(adapter = %adapter_name, workgroup_size, "GPU miner ready");
        Ok(Self {
            device,
            queue,
            pipeline,
            layout,
            segment: segment_buf,
            out,
            readback,
            positions,
            segment_bytes: segment.to_vec(),
            workgroup_size,
            max_workgroup_size,
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            adapter: adapter_name,
        })
    }

    /// The adapter in use (name, type, driver).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// Invocations per workgroup of the compiled kernel.
    pub fn workgroup_size(&self) -> u32 {
        self.workgroup_size
    }

    /// The largest workgroup size this device accepts.
    pub fn max_workgroup_size(&self) -> u32 {
        self.max_workgroup_size
    }

    /// The most workgroups one dispatch may name.
    pub fn max_workgroups(&self) -> u32 {
        self.max_workgroups
    }

    /// The most counters one dispatch may try at the current workgroup size.
    pub fn max_batch(&self) -> u32 {
        self.max_workgroups.saturating_mul(self.workgroup_size)
    }

    /// Recompiles the kernel for another workgroup size on the same device and segment (the
    /// autotuner's trials; cheaper than a new device and upload).
    pub fn set_workgroup_size(&mut self, workgroup_size: u32) -> Result<(), GpuError> {
        if workgroup_size == 0 || workgroup_size > self.max_workgroup_size {
            return Err(GpuError::WorkgroupSize {
                size: workgroup_size,
                max: self.max_workgroup_size,
            });
        }
        let (pipeline, layout) = compile(&self.device, workgroup_size)?;
        self.pipeline = pipeline;
        self.layout = layout;
        self.workgroup_size = workgroup_size;
        Ok(())
    }

    /// Tries counters `start .. start + count` for `miner`; returns the shares under `target`
    /// (re-checked with the rule), in counter order.
    pub fn mine(
        &self,
        miner: Address,
        target: &B256,
        start: u64,
        count: u32,
    ) -> Result<Vec<super::cpu::Found>, GpuError> {
        let groups = count.div_ceil(self.workgroup_size);
        if groups > self.max_workgroups {
            // wgpu would reject the dispatch with a panic; say which knob to lower instead.
            return Err(GpuError::Batch {
                count,
                workgroup_size: self.workgroup_size,
                max_groups: self.max_workgroups,
            });
        }
        let mut params: Vec<u32> = miner
            .as_slice()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        params.extend([
            (start >> 32) as u32,
            start as u32,
            count,
            self.positions,
            SHARE_CAPACITY,
        ]);
        params.extend(
            target
                .chunks_exact(4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]])),
        );
        let params_bytes: Vec<u8> = params.iter().flat_map(|w| w.to_le_bytes()).collect();
        let params_buf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &params_bytes,
                usage: wgpu::BufferUsages::STORAGE,
            });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("por"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.segment.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: params_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: self.out.as_entire_binding(),
                },
            ],
        });
        self.queue.write_buffer(&self.out, 0, &[0u8; 4]);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("por") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("por"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        encoder.copy_buffer_to_buffer(&self.out, 0, &self.readback, 0, None);
        self.queue.submit([encoder.finish()]);
        let words = self.read_back()?;
        let found = words[0];
        if found > SHARE_CAPACITY {
            return Err(GpuError::Overflow(found));
        }
        let mut shares: Vec<super::cpu::Found> = (0..found as usize)
            .map(|i| u64::from(words[1 + 2 * i]) << 32 | u64::from(words[2 + 2 * i]))
            .map(|counter| super::cpu::Found {
                counter,
                hash: share_hash(&self.segment_bytes, &nonce_bytes(miner, counter)),
            })
            // The CPU has the last word: a share the rule rejects is a kernel bug, dropped.
            .filter(|f| super::meets(&f.hash, target))
            .collect();
        shares.sort_unstable_by_key(|f| f.counter);
        Ok(shares)
    }

    fn read_back(&self) -> Result<Vec<u32>, GpuError> {
        let slice = self.readback.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let words = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            view.chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect()
        };
        self.readback.unmap();
        Ok(words)
    }
}
