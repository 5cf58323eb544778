//! One node as a discrete-event simulation: its engine, its instance on the simulated VPC, the
//! 5 s pool-check timer, and cloud calls that complete after their simulated latency.

use cloud::exec::execute;
use cloud::sim::SimVpc;
use ipam::Time;
use ipam::addr::{InstanceId, PodKey};
use ipam::call::{CallError, CallOutput, OpId};
use ipam::catalog::InstanceType;
use ipam::config::NodeConfig;
use ipam::datastore::DatastoreError;
use ipam::engine::{Effect, Engine, Event};
use ipam::policy::POOL_CHECK_INTERVAL;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::time::Duration;
use thiserror::Error;

/// How long the pool must stay unchanged to count as settled: longer than the ENI minimum
/// lifetime (60 s), the decrease gate (30 s) and the cooldown, together with some margin.
pub const SETTLE_QUIET: Duration = Duration::from_secs(130);
/// Give up settling after this much virtual time.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(3600);

/// Why the node could not be simulated.
#[derive(Debug, Error)]
pub enum NodeSimError {
    /// The instance could not be launched.
    #[error("launching the node failed: {0}")]
    Launch(#[source] CallError),
    /// The engine refused the instance's ENIs.
    #[error("the node's ENIs do not fit the datastore: {0}")]
    Datastore(#[from] DatastoreError),
    /// A call result did not fit the datastore.
    #[error("engine and simulated VPC disagree on {op}: {error}")]
    Inconsistent {
        /// The call.
        op: OpId,
        /// What was wrong.
        error: DatastoreError,
    },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    Done(u64),
}

/// One simulated node.
#[derive(Debug)]
pub struct NodeSim {
    engine: Engine,
    instance: InstanceId,
    now: Time,
    next_tick: Time,
    queue: BinaryHeap<Reverse<(Time, u64, Pending)>>,
    results: Vec<Option<(OpId, Result<CallOutput, CallError>)>>,
    seq: u64,
    last_change: Time,
}

impl NodeSim {
    /// Launches an instance of `t` in the config's node subnet on `vpc` at `now` and starts its
    /// engine.
    ///
    /// # Errors
    /// The launch failed or the engine refused the primary ENI.
    pub fn launch(
        vpc: &mut SimVpc,
        t: &InstanceType,
        mut cfg: NodeConfig,
        seed: u64,
        now: Time,
    ) -> Result<NodeSim, NodeSimError> {
        if cfg.az.is_none() {
            cfg.az = vpc.subnet(&cfg.node_subnet).map(|s| s.az.clone());
        }
        vpc.set_now(now);
        let (instance, primary) = vpc.run_instance(t, &cfg.node_subnet).map_err(NodeSimError::Launch)?;
        let started = now + vpc.take_elapsed();
        let info = primary.into_info(0);
        let engine = Engine::new(cfg, &[info], seed, started)?;
        Ok(NodeSim {
            engine,
            instance,
            now: started,
            next_tick: started,
            queue: BinaryHeap::new(),
            results: Vec::new(),
            seq: 0,
            last_change: started,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    fn push(&mut self, at: Time, p: Pending) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, p)));
    }

    fn apply(&mut self, vpc: &mut SimVpc, effects: Vec<Effect>) -> Result<(), NodeSimError> {
        for e in effects {
            match e {
                Effect::Call { op, call } => {
                    vpc.set_now(self.now);
                    let owner = cloud::exec::Owner::new(self.instance.clone());
                    let result = execute(vpc, &owner, self.now.as_millis() / 1000, &call);
                    let done = self.now + vpc.take_elapsed();
                    self.results.push(Some((op, result)));
                    let idx = self.results.len() as u64 - 1;
                    self.push(done, Pending::Done(idx));
                    self.last_change = self.now;
                }
                Effect::Inconsistent { op, error } => return Err(NodeSimError::Inconsistent { op, error }),
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs the next event (a timer tick or a call completion) no later than `until`; returns
    /// false when there is none.
    ///
    /// # Errors
    /// The engine and the VPC disagree.
    pub fn step(&mut self, vpc: &mut SimVpc, until: Time) -> Result<bool, NodeSimError> {
        let next_done = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let (at, is_tick) = match next_done {
            Some(t) if t <= self.next_tick => (t, false),
            _ => (self.next_tick, true),
        };
        if at > until {
            return Ok(false);
        }
        self.now = self.now.max(at);
        let effects = if is_tick {
            self.next_tick = at + POOL_CHECK_INTERVAL;
            self.engine.handle(self.now, Event::Tick)
        } else {
            let Some(Reverse((_, _, Pending::Done(idx)))) = self.queue.pop() else { return Ok(true) };
            let Some((op, result)) = self.results[idx as usize].take() else { return Ok(true) };
            self.last_change = self.now;
            self.engine.handle(self.now, Event::CallDone { op, result })
        };
        self.apply(vpc, effects)?;
        Ok(true)
    }

    /// Runs events until the pool has been quiet for [`SETTLE_QUIET`] (true) or
    /// [`SETTLE_LIMIT`] has passed (false).
    ///
    /// # Errors
    /// The engine and the VPC disagree.
    pub fn settle(&mut self, vpc: &mut SimVpc) -> Result<bool, NodeSimError> {
        let limit = self.now + SETTLE_LIMIT;
        while self.now < limit {
            if self.engine.in_flight() == 0 && self.now.since(self.last_change) >= SETTLE_QUIET {
                return Ok(true);
            }
            if !self.step(vpc, limit)? {
                break;
            }
        }
        Ok(false)
    }

    /// Asks for an address for `key`, running the node until the pool can give one or `patience`
    /// passes. Returns the address and how long the pod waited.
    ///
    /// # Errors
    /// The engine and the VPC disagree.
    pub fn add_pod(
        &mut self,
        vpc: &mut SimVpc,
        key: &PodKey,
        patience: Duration,
    ) -> Result<Option<(IpAddr, Duration)>, NodeSimError> {
        let start = self.now;
        self.last_change = self.now;
        loop {
            let effects = self.engine.handle(self.now, Event::PodAdd(key.clone()));
            let got = effects.iter().find_map(|e| match e {
                Effect::PodAssigned { addr, .. } => Some(*addr),
                _ => None,
            });
            if let Some(addr) = got {
                return Ok(Some((addr, self.now.since(start))));
            }
            // Retry after the next event, as kubelet retries a failed sandbox.
            if self.now.since(start) >= patience || !self.step(vpc, start + patience)? {
                return Ok(None);
            }
        }
    }

    /// Releases `key`'s address.
    pub fn del_pod(&mut self, key: &PodKey) -> Option<IpAddr> {
        self.last_change = self.now;
        let effects = self.engine.handle(self.now, Event::PodDel(key.clone()));
        effects.into_iter().find_map(|e| match e {
            Effect::PodReleased { addr, .. } => addr,
            _ => None,
        })
    }
}
