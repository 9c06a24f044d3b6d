//! Scenarios for `compromis hv`: a small line-oriented text format of host-memory operations.
//!
//! ```text
//! # comment (also after a statement)
//! host <size> [policy=first-fit|best-fit|worst-fit|next-fit] [map=flat|pc] [nodes=N] [reserve=<start>:<size>[:<label>]]...
//! policy <policy>
//! create <vm> <size> [align=4k|2m|1g] [extents=K]
//! provision <vm> <size> [page=4k|2m|1g] [fallback=refuse|ept|segments:K|compact]
//! destroy <vm>
//! grow <vm> <size>
//! shrink <vm> <size>
//! compact <size> [align=4k|2m|1g]
//! age [seed=N] [fill=F] [steps=N]
//! check
//! ```
//! Sizes use binary units (`4GiB`, `512M`, `4096`); addresses are sizes or hexadecimal (`0x1000`).
//! A VM is `vm<N>` or `<N>`. The first statement must be `host`, and only one `host` is allowed.
//! Defaults: policy first-fit, map flat, 1 node, align / page 2m, extents 1, fallback refuse,
//! compact align 2m, age seed 1 fill 0.8 steps 2000.
//!
//! A malformed statement is a [`ScenarioError`] naming file and line. A refused operation (no
//! extent, unknown VM...) is not an error: the step reports it ([`StepOutcome::Refused`]) and the
//! state is unchanged. Steps return typed data; `compromis_report::hv` turns it into prose.

use crate::age::{AgeConfig, AgeReport};
use crate::extent::{AllocError, Policy};
use crate::host::{GrowOutcome, HostMemory, InvariantError, Move};
use crate::layout::{Fallback, VmMemory};
use crate::map::{HostMap, Reserved};
use crate::snapshot::MapSnapshot;
use compromis_types::{ByteSize, Extent, PageSize, VmId};
use thiserror::Error;

/// A scenario that does not parse or cannot start.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file}:{line}: {msg}")]
pub struct ScenarioError {
    /// File name as given.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// Which memory map `host` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// One RAM range from 0.
    Flat,
    /// [`HostMap::pc`]: a PCI hole at 3 GiB, firmware and hypervisor reserved.
    Pc,
}

/// One statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Sets up the host.
    Host {
        /// RAM bytes.
        capacity: u64,
        /// Allocation policy.
        policy: Policy,
        /// Map kind.
        map: MapKind,
        /// NUMA nodes.
        nodes: u32,
        /// Extra reserved ranges with their labels.
        reserve: Vec<(Extent, String)>,
    },
    /// Changes the policy.
    Policy(Policy),
    /// [`HostMemory::create`].
    Create {
        /// VM.
        vm: VmId,
        /// Bytes.
        len: u64,
        /// Alignment.
        align: PageSize,
        /// Extent limit.
        extents: usize,
    },
    /// [`HostMemory::provision`].
    Provision {
        /// VM.
        vm: VmId,
        /// RAM bytes.
        len: u64,
        /// Host page size.
        page: PageSize,
        /// Fallback.
        fallback: Fallback,
    },
    /// [`HostMemory::destroy`].
    Destroy(VmId),
    /// [`HostMemory::grow`].
    Grow(VmId, u64),
    /// [`HostMemory::shrink`].
    Shrink(VmId, u64),
    /// Plan and apply a compaction for a free extent of this size.
    Compact(u64, PageSize),
    /// [`HostMemory::age_with`].
    Age {
        /// Seed.
        seed: u64,
        /// Target fill.
        fill: f64,
        /// Churn steps.
        steps: usize,
    },
    /// [`HostMemory::check`].
    Check,
}

/// A statement with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// 1-based line number.
    pub line: usize,
    /// The statement text (comment removed).
    pub text: String,
    /// The parsed statement.
    pub step: Step,
}

/// A parsed scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// File name, for messages.
    pub file: String,
    /// Statements in order (the first is `host`).
    pub lines: Vec<Line>,
}

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    /// The host of the first statement was built.
    Host {
        /// RAM bytes.
        capacity: u64,
        /// Allocation policy.
        policy: Policy,
    },
    /// The allocation policy changed.
    PolicySet(Policy),
    /// A VM was created ([`HostMemory::create`]).
    Created {
        /// VM.
        vm: VmId,
        /// Bytes.
        len: u64,
        /// Its extents, in guest order.
        extents: Vec<Extent>,
    },
    /// A VM was provisioned ([`HostMemory::provision`]).
    Provisioned {
        /// VM.
        vm: VmId,
        /// Its segments or EPT mapping.
        memory: VmMemory,
    },
    /// A VM was destroyed.
    Destroyed {
        /// VM.
        vm: VmId,
        /// Bytes freed.
        freed: u64,
    },
    /// A VM grew: in place, relocated (bytes copied) or with added extents.
    Grown {
        /// VM.
        vm: VmId,
        /// Bytes added.
        by: u64,
        /// How.
        how: GrowOutcome,
    },
    /// A VM shrank.
    Shrunk {
        /// VM.
        vm: VmId,
        /// Bytes released.
        released: u64,
    },
    /// A free extent of the wanted size already existed: nothing moved.
    NothingToCompact {
        /// Wanted free extent.
        want: u64,
    },
    /// A compaction plan was applied.
    Compacted {
        /// Wanted free extent.
        want: u64,
        /// The moves, in order.
        moves: Vec<Move>,
        /// Bytes copied.
        bytes_moved: u64,
        /// Largest free extent after it.
        largest_free: u64,
    },
    /// The host was aged.
    Aged {
        /// Seed.
        seed: u64,
        /// What ageing did.
        report: AgeReport,
    },
    /// Every invariant holds.
    Checked,
    /// The operation was refused; the state is unchanged.
    Refused(Refusal),
    /// The checker found a violated invariant.
    CheckFailed(InvariantError),
}

/// Why a step was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// The host memory manager refused the operation.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// No compaction plan creates the wanted free extent.
    #[error("no compaction plan creates a free extent of {}", ByteSize(*want))]
    NoCompactionPlan {
        /// Wanted free extent.
        want: u64,
    },
    /// A second `host` statement (the parser rejects it; kept for completeness).
    #[error("'host' may appear only once")]
    SecondHost,
}

impl StepOutcome {
    /// False when the operation was refused or the check failed.
    pub fn ok(&self) -> bool {
        !matches!(self, StepOutcome::Refused(_) | StepOutcome::CheckFailed(_))
    }

    /// Bytes copied by the step (relocation or compaction).
    pub fn bytes_copied(&self) -> u64 {
        match self {
            StepOutcome::Grown {
                how: GrowOutcome::Relocated { bytes_copied, .. },
                ..
            } => *bytes_copied,
            StepOutcome::Compacted { bytes_moved, .. } => *bytes_moved,
            _ => 0,
        }
    }
}

/// What one step did, and the map after it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// 1-based line number.
    pub line: usize,
    /// The statement.
    pub text: String,
    /// What it did.
    pub outcome: StepOutcome,
    /// The map after the step.
    pub map: MapSnapshot,
}

impl StepReport {
    /// False when the operation was refused or the check failed.
    pub fn ok(&self) -> bool {
        self.outcome.ok()
    }

    /// Bytes copied by the step (relocation or compaction).
    pub fn bytes_copied(&self) -> u64 {
        self.outcome.bytes_copied()
    }
}

/// The built-in demo scenario of `compromis hv`.
pub const DEMO: &str = include_str!("demo.hv");

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| e.to_string())
}

fn parse_addr(s: &str) -> Result<u64, String> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(&h.replace('_', ""), 16)
            .map_err(|_| format!("bad hexadecimal address '{s}'"))
    } else {
        parse_size(s)
    }
}

fn parse_vm(s: &str) -> Result<VmId, String> {
    let digits = s.strip_prefix("vm").unwrap_or(s);
    digits
        .parse::<u64>()
        .map(VmId)
        .map_err(|_| format!("bad VM name '{s}': expected vm<N> or <N>"))
}

fn parse_page(s: &str) -> Result<PageSize, String> {
    s.parse::<PageSize>().map_err(|e| e.to_string())
}

fn parse_fallback(s: &str) -> Result<Fallback, String> {
    s.parse::<Fallback>().map_err(|e| e.to_string())
}

/// Splits `key=value` options; rejects unknown keys.
fn options<'a>(toks: &[&'a str], allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    toks.iter()
        .map(|t| {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, found '{t}'"))?;
            if allowed.contains(&k) {
                Ok((k, v))
            } else {
                Err(format!(
                    "unknown option '{k}': valid options are {}",
                    allowed.join(", ")
                ))
            }
        })
        .collect()
}

fn positional<'a>(
    toks: &[&'a str],
    n: usize,
    usage: &str,
) -> Result<(Vec<&'a str>, Vec<&'a str>), String> {
    let pos: Vec<&str> = toks
        .iter()
        .take_while(|t| !t.contains('='))
        .copied()
        .collect();
    if pos.len() != n {
        return Err(format!("expected {n} argument(s): usage: {usage}"));
    }
    Ok((pos, toks[n..].to_vec()))
}

fn parse_step(toks: &[&str]) -> Result<Step, String> {
    let (cmd, rest) = toks.split_first().ok_or("empty statement")?;
    match *cmd {
        "host" => {
            let usage = "host <size> [policy=P] [map=flat|pc] [nodes=N] [reserve=<start>:<size>[:<label>]]...";
            let (pos, opts) = positional(rest, 1, usage)?;
            let capacity = parse_size(pos[0])?;
            let (mut policy, mut map, mut nodes, mut reserve) =
                (Policy::FirstFit, MapKind::Flat, 1u32, Vec::new());
            for (k, v) in options(&opts, &["policy", "map", "nodes", "reserve"])? {
                match k {
                    "policy" => {
                        policy = v
                            .parse()
                            .map_err(|e: crate::ParsePolicyError| e.to_string())?
                    }
                    "map" => {
                        map = match v {
                            "flat" => MapKind::Flat,
                            "pc" => MapKind::Pc,
                            _ => return Err(format!("bad map '{v}': valid values are flat, pc")),
                        }
                    }
                    "nodes" => {
                        nodes = v
                            .parse()
                            .ok()
                            .filter(|&n| (1..=64).contains(&n))
                            .ok_or(format!("bad node count '{v}': expected 1..64"))?;
                    }
                    _ => {
                        let mut parts = v.splitn(3, ':');
                        let (Some(s), Some(l)) = (parts.next(), parts.next()) else {
                            return Err(format!(
                                "bad reserve '{v}': expected <start>:<size>[:<label>]"
                            ));
                        };
                        let label = parts
                            .next()
                            .filter(|l| !l.is_empty())
                            .unwrap_or("hypervisor");
                        reserve.push((
                            Extent::new(parse_addr(s)?, parse_size(l)?),
                            label.to_owned(),
                        ));
                    }
                }
            }
            if capacity == 0 || !capacity.is_multiple_of(PageSize::Size4K.bytes()) {
                return Err(format!(
                    "host capacity {} must be a positive multiple of 4KiB",
                    ByteSize(capacity)
                ));
            }
            let g = PageSize::Size1G.bytes();
            if map == MapKind::Pc && (capacity < 4 * g || !capacity.is_multiple_of(g)) {
                return Err(format!(
                    "map=pc needs a capacity that is a multiple of 1GiB and at least 4GiB, not {}",
                    ByteSize(capacity)
                ));
            }
            Ok(Step::Host {
                capacity,
                policy,
                map,
                nodes,
                reserve,
            })
        }
        "policy" => {
            let (pos, _) = positional(rest, 1, "policy <policy>")?;
            if rest.len() > 1 {
                return Err("usage: policy <policy>".into());
            }
            Ok(Step::Policy(
                pos[0]
                    .parse()
                    .map_err(|e: crate::ParsePolicyError| e.to_string())?,
            ))
        }
        "create" => {
            let (pos, opts) = positional(rest, 2, "create <vm> <size> [align=A] [extents=K]")?;
            let (mut align, mut extents) = (PageSize::Size2M, 1usize);
            for (k, v) in options(&opts, &["align", "extents"])? {
                match k {
                    "align" => align = parse_page(v)?,
                    _ => extents = v.parse().map_err(|_| format!("bad extent count '{v}'"))?,
                }
            }
            Ok(Step::Create {
                vm: parse_vm(pos[0])?,
                len: parse_size(pos[1])?,
                align,
                extents,
            })
        }
        "provision" => {
            let (pos, opts) = positional(
                rest,
                2,
                "provision <vm> <size> [page=A] [fallback=refuse|ept|segments:K|compact]",
            )?;
            let (mut page, mut fallback) = (PageSize::Size2M, Fallback::Refuse);
            for (k, v) in options(&opts, &["page", "fallback"])? {
                match k {
                    "page" => page = parse_page(v)?,
                    _ => fallback = parse_fallback(v)?,
                }
            }
            Ok(Step::Provision {
                vm: parse_vm(pos[0])?,
                len: parse_size(pos[1])?,
                page,
                fallback,
            })
        }
        "destroy" => {
            let (pos, _) = positional(rest, 1, "destroy <vm>")?;
            if rest.len() > 1 {
                return Err("usage: destroy <vm>".into());
            }
            Ok(Step::Destroy(parse_vm(pos[0])?))
        }
        "grow" | "shrink" => {
            let (pos, opts) = positional(rest, 2, &format!("{cmd} <vm> <size>"))?;
            if !opts.is_empty() {
                return Err(format!("usage: {cmd} <vm> <size>"));
            }
            let (vm, len) = (parse_vm(pos[0])?, parse_size(pos[1])?);
            Ok(if *cmd == "grow" {
                Step::Grow(vm, len)
            } else {
                Step::Shrink(vm, len)
            })
        }
        "compact" => {
            let (pos, opts) = positional(rest, 1, "compact <size> [align=A]")?;
            let mut align = PageSize::Size2M;
            for (_, v) in options(&opts, &["align"])? {
                align = parse_page(v)?;
            }
            let want = parse_size(pos[0])?;
            if want == 0 {
                return Err("compact needs a positive size".into());
            }
            Ok(Step::Compact(want, align))
        }
        "age" => {
            let (mut seed, mut fill, mut steps) = (1u64, 0.8f64, 2000usize);
            for (k, v) in options(rest, &["seed", "fill", "steps"])? {
                match k {
                    "seed" => seed = v.parse().map_err(|_| format!("bad seed '{v}'"))?,
                    "fill" => {
                        fill = v
                            .parse::<f64>()
                            .ok()
                            .filter(|f| (0.0..=1.0).contains(f))
                            .ok_or(format!("bad fill '{v}': expected a number in 0..1"))?;
                    }
                    _ => {
                        steps = v
                            .parse()
                            .ok()
                            .filter(|&s| s <= 10_000_000)
                            .ok_or(format!("bad step count '{v}'"))?
                    }
                }
            }
            Ok(Step::Age { seed, fill, steps })
        }
        "check" if rest.is_empty() => Ok(Step::Check),
        "check" => Err("usage: check".into()),
        other => Err(format!(
            "unknown statement '{other}': valid statements are host, policy, create, provision, destroy, grow, shrink, compact, age, check"
        )),
    }
}

impl Scenario {
    /// Parses a scenario; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let err = |line: usize, msg: String| ScenarioError {
            file: file.to_owned(),
            line,
            msg,
        };
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let toks: Vec<&str> = body.split_whitespace().collect();
            let step = parse_step(&toks).map_err(|m| err(n, m))?;
            let is_host = matches!(step, Step::Host { .. });
            if lines.is_empty() && !is_host {
                return Err(err(
                    n,
                    "the first statement must be 'host <size> ...'".into(),
                ));
            }
            if !lines.is_empty() && is_host {
                return Err(err(
                    n,
                    "'host' may appear only once, as the first statement".into(),
                ));
            }
            lines.push(Line {
                line: n,
                text: body.to_owned(),
                step,
            });
        }
        if lines.is_empty() {
            return Err(err(
                1,
                "empty scenario: the first statement must be 'host <size> ...'".into(),
            ));
        }
        Ok(Scenario {
            file: file.to_owned(),
            lines,
        })
    }

    /// Builds the host of the first statement.
    pub fn host(&self) -> Result<HostMemory, ScenarioError> {
        let first = &self.lines[0];
        let err = |msg: String| ScenarioError {
            file: self.file.clone(),
            line: first.line,
            msg,
        };
        let Step::Host {
            capacity,
            policy,
            map,
            nodes,
            reserve,
        } = &first.step
        else {
            return Err(err("the first statement must be 'host'".into()));
        };
        let mut m = match map {
            MapKind::Flat => {
                let mut m = HostMap::flat(*capacity);
                // Split the address space evenly between the nodes.
                let per = (capacity / u64::from(*nodes)) & !(PageSize::Size4K.mask());
                if *nodes > 1 && per > 0 {
                    m.numa = (0..*nodes)
                        .map(|i| {
                            let s = per * u64::from(i);
                            let l = if i + 1 == *nodes { capacity - s } else { per };
                            crate::map::NumaNode {
                                id: i,
                                ranges: vec![Extent::new(s, l)],
                            }
                        })
                        .collect();
                }
                m
            }
            MapKind::Pc => HostMap::pc(*capacity, *nodes),
        };
        for (r, label) in reserve {
            m.reserved.push(Reserved {
                ext: *r,
                label: label.clone(),
            });
        }
        HostMemory::with_map(m, *policy).map_err(|e| err(e.to_string()))
    }

    /// Runs the scenario on a fresh host and reports every step (the `host` statement included).
    pub fn run(&self) -> Result<Vec<StepReport>, ScenarioError> {
        let mut out = Vec::new();
        self.run_with(|r, _| out.push(r.clone()))?;
        Ok(out)
    }

    /// Runs the scenario, calling `each` after every step with its report and the host state.
    pub fn run_with(
        &self,
        each: impl FnMut(&StepReport, &HostMemory),
    ) -> Result<(), ScenarioError> {
        self.run_each(true, each)
    }

    /// As [`Scenario::run_with`]; without `maps`, each report's [`StepReport::map`] is left
    /// empty (no copy of the host map per step: a long scenario keeps its memory flat).
    pub fn run_each(
        &self,
        maps: bool,
        mut each: impl FnMut(&StepReport, &HostMemory),
    ) -> Result<(), ScenarioError> {
        let snap = |h: &HostMemory| {
            if maps {
                MapSnapshot::capture(h)
            } else {
                MapSnapshot {
                    ram: Vec::new(),
                    spans: Vec::new(),
                }
            }
        };
        let mut h = self.host()?;
        let first = &self.lines[0];
        let r = StepReport {
            line: first.line,
            text: first.text.clone(),
            outcome: StepOutcome::Host {
                capacity: h.capacity(),
                policy: h.policy(),
            },
            map: snap(&h),
        };
        each(&r, &h);
        for l in &self.lines[1..] {
            let outcome = execute(&mut h, &l.step);
            let r = StepReport {
                line: l.line,
                text: l.text.clone(),
                outcome,
                map: snap(&h),
            };
            each(&r, &h);
        }
        Ok(())
    }
}

/// Runs one statement; a refusal leaves the state unchanged.
fn execute(h: &mut HostMemory, step: &Step) -> StepOutcome {
    try_execute(h, step).unwrap_or_else(StepOutcome::Refused)
}

fn try_execute(h: &mut HostMemory, step: &Step) -> Result<StepOutcome, Refusal> {
    Ok(match step {
        Step::Host { .. } => return Err(Refusal::SecondHost),
        Step::Policy(p) => {
            h.set_policy(*p);
            StepOutcome::PolicySet(*p)
        }
        Step::Create {
            vm,
            len,
            align,
            extents,
        } => StepOutcome::Created {
            vm: *vm,
            len: *len,
            extents: h.create(*vm, *len, *align, *extents)?.to_vec(),
        },
        Step::Provision {
            vm,
            len,
            page,
            fallback,
        } => StepOutcome::Provisioned {
            vm: *vm,
            memory: h.provision(*vm, *len, *page, *fallback)?,
        },
        Step::Destroy(vm) => StepOutcome::Destroyed {
            vm: *vm,
            freed: h.destroy(*vm)?,
        },
        Step::Grow(vm, len) => StepOutcome::Grown {
            vm: *vm,
            by: *len,
            how: h.grow(*vm, *len)?,
        },
        Step::Shrink(vm, len) => StepOutcome::Shrunk {
            vm: *vm,
            released: h.shrink(*vm, *len)?,
        },
        Step::Compact(want, align) => {
            let plan = h
                .plan_compaction(*want, *align)
                .ok_or(Refusal::NoCompactionPlan { want: *want })?;
            if plan.moves.is_empty() {
                return Ok(StepOutcome::NothingToCompact { want: *want });
            }
            h.apply(&plan)?;
            StepOutcome::Compacted {
                want: *want,
                bytes_moved: plan.bytes_moved(),
                moves: plan.moves,
                largest_free: h.largest_free(),
            }
        }
        Step::Age { seed, fill, steps } => {
            let mut cfg = AgeConfig::new(*seed, *fill);
            cfg.steps = *steps;
            StepOutcome::Aged {
                seed: *seed,
                report: h.age_with(&cfg),
            }
        }
        Step::Check => match h.check() {
            Ok(()) => StepOutcome::Checked,
            Err(e) => StepOutcome::CheckFailed(e),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_parses_and_runs() {
        let s = Scenario::parse(DEMO, "<demo>").unwrap();
        let r = s.run().unwrap();
        assert_eq!(r.len(), s.lines.len());
        assert!(r.iter().any(|x| !x.ok()), "the demo shows a refusal");
        assert!(
            r.iter().any(|x| x.bytes_copied() > 0),
            "the demo shows a copy"
        );
        assert!(r.last().unwrap().ok());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Scenario::parse("host 1GiB\n\ncreate vm1 lots\n", "x.hv").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("x.hv", 3));
        assert!(e.to_string().starts_with("x.hv:3: "), "{e}");
        let e = Scenario::parse("create vm1 1G\n", "y.hv").unwrap_err();
        assert_eq!(e.line, 1);
        let e = Scenario::parse("host 1G policy=fastest\n", "z").unwrap_err();
        assert!(e.msg.contains("first-fit, best-fit"), "{e}");
        let e = Scenario::parse("host 1G\nfrobnicate\n", "z").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Scenario::parse("host 1G reserve=2G:1M\n", "r")
            .unwrap()
            .host()
            .unwrap_err();
        assert_eq!(e.line, 1);
        assert!(Scenario::parse("# only a comment\n", "c").is_err());
        for bad in [
            "host 1",
            "host 4096 map=pc",
            "host 5G map=pc nodes=0",
            "host 8G\ncompact 0",
        ] {
            assert!(Scenario::parse(bad, "b").is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_do_not_stop_the_run() {
        let s = Scenario::parse(
            "host 4GiB\ncreate 1 8GiB\ndestroy 2\ncreate 1 1GiB # ok\ncheck\n",
            "t",
        )
        .unwrap();
        let r = s.run().unwrap();
        let oks: Vec<bool> = r.iter().map(StepReport::ok).collect();
        assert_eq!(oks, vec![true, false, false, true, true]);
        assert!(
            matches!(
                r[1].outcome,
                StepOutcome::Refused(Refusal::Alloc(AllocError::TooLarge { .. }))
            ),
            "{:?}",
            r[1].outcome
        );
        assert_eq!(
            r[2].outcome,
            StepOutcome::Refused(Refusal::Alloc(AllocError::UnknownVm(VmId(2))))
        );
    }
}

/// Mutation fuzzing of the scenario reader (issue 15): the built-in demo (kept as a seed in
/// `tests/data/fuzz/demo.hv`) is mutated by bit flips, truncation, insertion and deletion; it must
/// parse and run, or fail with an error naming the file. 256 cases by default;
/// `PROPTEST_CASES=100000` for a long local run.
#[cfg(test)]
mod fuzz {
    use super::*;
    use compromis_types::fuzz::{apply, cases, mutation};
    use proptest::prelude::*;
    const SPECIALS: &[&[u8]] = &[b"18446744073709551615", b"99999999TiB"];

    const TOKENS: &[u8] = b"\n #=:createdestroygrowshrinkprovisionvmGiBMiBTiB0123456789";

    fn seed() -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/demo.hv"),
        )
        .unwrap()
    }

    #[test]
    fn seed_is_the_demo_and_runs() {
        assert_eq!(seed(), DEMO.as_bytes());
        let s = Scenario::parse(DEMO, "fuzz-input").unwrap();
        assert!(s.run_each(false, |_, _| {}).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn mutated_scenarios_run_or_name_the_file(
            muts in proptest::collection::vec(mutation(TOKENS, SPECIALS), 1..6),
        ) {
            let bytes = apply(seed(), &muts);
            let text = String::from_utf8_lossy(&bytes);
            match Scenario::parse(&text, "fuzz-input") {
                Ok(s) => {
                    if let Err(e) = s.run_each(false, |_, _| {}) {
                        prop_assert!(e.to_string().contains("fuzz-input"), "{e}");
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("fuzz-input"), "{e}"),
            }
        }
    }
}
