//! Instruction-tuning samples (§4.3, §A.3): a layer as a question — the
//! requirements (its conditions), natural-language constraints generated from
//! a template, and optionally a user instruction — and an answer: the layer's
//! edges followed by the intermediate reasoning lines (edge arithmetic, the
//! constraints of each subgraph, the remaining edge budget) around its
//! subgraph conditions. The format is the one of the Alibaba recursive
//! instruction example that comes with the data.

use std::collections::{HashMap, HashSet};

use rand::Rng;
use rand::seq::SliceRandom;

use super::graph::{CallGraph, Edge, Layer, LayerConditions};
use super::text::{BodyLine, Conditions, EdgeLine, Instruction, LayerText, shuffled_conditions, shuffled_fields};

/// The system prompt every sample starts with.
pub const SYSTEM: &str = "You are a trace generator that creates traces based on given requirements.";

/// A user instruction (§5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInstruction {
    /// First layer: the graph's latency follows the data's distributions.
    Distributions,
    /// First layer: the graph's latency is above the service's 90th percentile.
    HighLatency,
    /// Any layer: it contains this (uncommon) call.
    IncludeEdge { source: String, destination: String, kind: String },
}

impl UserInstruction {
    pub fn line(&self) -> String {
        match self {
            UserInstruction::Distributions => "Build a call graph with latencies based on distributions".into(),
            UserInstruction::HighLatency => "Build a call graph with high latency".into(),
            UserInstruction::IncludeEdge { source, destination, kind } => {
                format!("Include an edge from {source} to {destination} with {kind} type")
            }
        }
    }

    /// The instruction a prompt line states, if it is one.
    pub fn parse(line: &str) -> Option<Self> {
        match line {
            "Build a call graph with latencies based on distributions" => return Some(UserInstruction::Distributions),
            "Build a call graph with high latency" => return Some(UserInstruction::HighLatency),
            _ => {}
        }
        let rest = line.strip_prefix("Include an edge from ")?.strip_suffix(" type")?;
        let (source, rest) = rest.split_once(" to ")?;
        let (destination, kind) = rest.split_once(" with ")?;
        Some(UserInstruction::IncludeEdge { source: source.into(), destination: destination.into(), kind: kind.into() })
    }

    /// Whether `edges` (with their sources) satisfy an edge instruction; the
    /// latency instructions are judged on the whole graph instead.
    pub fn included_in(&self, edges: &[Edge]) -> bool {
        match self {
            UserInstruction::IncludeEdge { source, destination, kind } => {
                edges.iter().any(|e| e.source == *source && e.destination == *destination && e.kind == *kind)
            }
            _ => true,
        }
    }
}

/// Every template constraint the requirements `c` support, in a fixed order.
pub fn constraint_lines(c: &LayerConditions) -> Vec<String> {
    let mut lines = Vec::new();
    match c.num_subgraphs {
        Some(0) => lines.push("no subgraph to generate".to_string()),
        Some(n) => lines.push(format!("generate {n} number of subgraphs")),
        None => {}
    }
    if let Some(k) = c.num_current_edges {
        lines.push(format!("generate {k} edges following num_current_edges"));
    }
    if let Some(s) = c.start_communication_at {
        lines.push(format!("the first start_communication_at should be requirement's start_communication_at {s}"));
    }
    if let Some(l) = c.latency {
        lines.push(format!("In each edge, communication start time should NOT be greater than latency {l} milliseconds"));
        lines.push(format!("Also, communication should finish before latency {l} milliseconds"));
    }
    lines.push("for all edges, communication start time <= communication finish time".to_string());
    // The dataset's wording: the layer's caller *for its edges* is its start node.
    if let Some(s) = &c.start_node {
        lines.push(format!("copy caller from requirement's start_node:{s}"));
    }
    if let Some(e) = c.start_edge_id {
        lines.push(format!("the first edge_id should be start_edge_id {e}"));
    }
    lines
}

/// The answer's reasoning and subgraph lines for `l`, the constraint lines
/// and conditions of each subgraph shuffled with `rng`. `true`: the last line
/// closes the layer inline (the dataset does so when there are subgraphs).
pub fn reasoning(l: &Layer, rng: &mut impl Rng) -> (Vec<BodyLine>, bool) {
    let text = |s: String| BodyLine::Text(s);
    let k = l.edges.len() as u64;
    let first = l.edges.first().map_or(0, |e| u64::from(e.id[0]));
    let last = l.edges.last().map_or(0, |e| u64::from(e.id[0]));
    let n = l.conditions.num_edges.unwrap_or(k);
    let mut left = n.saturating_sub(k);
    let mut body = vec![
        text(format!("num generated edges = the last edge id - the first edge id + 1 = {last} - {first} + 1 = {k}")),
        text(format!("{k} edges generated out of num_edges:{n}")),
        text(format!("num_remaining_edges = num_edges:{n} - generated:{k} = {left}")),
    ];
    if l.subgraphs.is_empty() {
        body.push(text("finish generation".into()));
        return (body, false);
    }
    body.push(text(String::new()));
    let ids: Vec<String> = l
        .subgraphs
        .iter()
        .enumerate()
        .map(|(i, (e, _))| if i == 0 { format!("edge:{e}") } else { format!("edge_id:{e}") })
        .collect();
    body.push(text(format!("generate subgraphs of {}", ids.join(","))));
    let rd = l.conditions.remaining_depth;
    for (edge, sub) in &l.subgraphs {
        body.push(text("Subgraph constraints:".into()));
        let mut constraints = vec![format!("num_edges <= num_remaining_edges:{left}")];
        let destination = l.edges.iter().find(|e| u64::from(e.id[0]) == *edge).map_or("", |e| e.destination.as_str());
        constraints.push(format!("copy start_node from edge {edge} destination: {destination}"));
        if let (Some(rd), Some(sub_rd)) = (rd, sub.remaining_depth)
            && rd >= 1
            && sub_rd == rd - 1
        {
            constraints.push(format!("remaining_depth should be the requirement's remaining_depth:{rd} - 1 = {sub_rd}"));
        }
        constraints.shuffle(rng);
        body.extend(constraints.into_iter().map(text));
        body.push(BodyLine::Subgraph { edge: *edge, conditions: shuffled_conditions(sub, rng, 0.0) });
        let b = sub.num_edges.unwrap_or(0);
        body.push(text(format!("now, num_remaining_edges is {left} - {b} = {}", left.saturating_sub(b))));
        left = left.saturating_sub(b);
    }
    body.push(text("finish generation".into()));
    (body, true)
}

/// How samples are drawn from layers.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Probability of dropping each requirement but `id` of a first layer.
    pub p_drop: f64,
    /// Probability of leaving out each template constraint line (the dataset
    /// leaves some out, so the model cannot count on any one of them).
    pub p_drop_line: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { p_drop: 0.5, p_drop_line: 0.1 }
    }
}

/// One instruction sample for layer `l` (`first`: the graph's first layer),
/// with an optional user instruction; requirements, constraint lines, edge
/// fields and subgraph conditions shuffled.
pub fn encode(l: &Layer, first: bool, user: Option<&UserInstruction>, s: Sampling, rng: &mut impl Rng) -> Instruction {
    let requirements = shuffled_conditions(&l.conditions, rng, if first { s.p_drop } else { 0.0 });
    // The template speaks only of the requirements the prompt states.
    let stated = requirements.layer(0).unwrap_or_default();
    let mut prompt: Vec<String> =
        constraint_lines(&stated).into_iter().filter(|_| s.p_drop_line <= 0.0 || !rng.random_bool(s.p_drop_line)).collect();
    if let Some(u) = user {
        prompt.push(u.line());
    }
    prompt.shuffle(rng);
    let edges = l.edges.iter().map(|e| EdgeLine::from_edge(e, &shuffled_fields(rng), false)).collect();
    let (body, close_inline) = reasoning(l, rng);
    let answer = LayerText { conditions: requirements.clone(), edges, body, close_inline, line: 0 };
    Instruction { system: SYSTEM.into(), requirements, prompt, answer }
}

/// What choosing user instructions needs to know of the training graphs
/// (§5.3): each service's 90th-percentile latency, and how often each call
/// occurs.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    p90: HashMap<String, u64>,
    /// Graphs containing each (source, destination, type) call.
    calls: HashMap<(String, String, String), usize>,
    /// Graphs in which each microservice makes a call.
    callers: HashMap<String, usize>,
    /// Training graphs counted.
    graphs: usize,
}

impl Facts {
    pub fn of(graphs: &[CallGraph]) -> Self {
        let mut latencies: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut f = Facts { graphs: graphs.len(), ..Facts::default() };
        for g in graphs {
            latencies.entry(g.service.as_str()).or_default().push(g.latency());
            let calls: HashSet<(&str, &str, &str)> =
                g.edges.iter().map(|e| (e.source.as_str(), e.destination.as_str(), e.kind.as_str())).collect();
            let callers: HashSet<&str> = calls.iter().map(|c| c.0).collect();
            for (s, d, k) in calls {
                *f.calls.entry((s.into(), d.into(), k.into())).or_default() += 1;
            }
            for c in callers {
                *f.callers.entry(c.into()).or_default() += 1;
            }
        }
        for (service, mut l) in latencies {
            l.sort_unstable();
            // Nearest rank: the smallest latency at or above 90 % of the graphs.
            let rank = (l.len() * 9).div_ceil(10).max(1) - 1;
            f.p90.insert(service.into(), l[rank]);
        }
        f
    }

    /// The service's 90th-percentile latency in training, if it was seen.
    pub fn p90(&self, service: &str) -> Option<u64> {
        self.p90.get(service).copied()
    }

    /// Whether a graph of `service` with this latency counts as high latency.
    pub fn high_latency(&self, service: &str, latency: u64) -> bool {
        self.p90(service).is_some_and(|p| latency > p)
    }

    /// A call occurring in under 10 % of the graphs where its source calls anything.
    pub fn uncommon(&self, e: &Edge) -> bool {
        let key = (e.source.clone(), e.destination.clone(), e.kind.clone());
        let (calls, callers) = (self.calls.get(&key).copied().unwrap_or(0), self.callers.get(&e.source).copied().unwrap_or(0));
        callers > 0 && calls * 10 < callers
    }

    /// A call occurring in under 10 % of all training graphs, the paper's
    /// words for an uncommon communication ("occurring in less than 10 % of
    /// the training data"), whoever makes it.
    pub fn rare(&self, e: &Edge) -> bool {
        let key = (e.source.clone(), e.destination.clone(), e.kind.clone());
        self.calls.get(&key).copied().unwrap_or(0) * 10 < self.graphs
    }

    /// The user instruction a tuning sample of layer `j` of `g` carries: the
    /// latency instruction on the first layer, an uncommon call of the layer
    /// on the others (none when the layer has no uncommon call).
    pub fn instruction(&self, g: &CallGraph, j: usize, l: &Layer) -> Option<UserInstruction> {
        if j == 0 {
            return Some(if self.high_latency(&g.service, g.latency()) {
                UserInstruction::HighLatency
            } else {
                UserInstruction::Distributions
            });
        }
        l.edges.iter().find(|e| self.uncommon(e)).map(|e| UserInstruction::IncludeEdge {
            source: e.source.clone(),
            destination: e.destination.clone(),
            kind: e.kind.clone(),
        })
    }
}

/// Instruction samples of every layer of `g`, each with the instruction `facts` choose.
pub fn samples(g: &CallGraph, facts: &Facts, s: Sampling, rng: &mut impl Rng) -> Vec<Instruction> {
    g.layers().iter().enumerate().map(|(j, l)| encode(l, j == 0, facts.instruction(g, j, l).as_ref(), s, rng)).collect()
}

/// The question for a layer to generate under conditions `c`: every
/// template constraint, and the user instruction if there is one.
pub fn question(c: &LayerConditions, keys: &[&str], user: Option<&UserInstruction>) -> Instruction {
    let requirements = Conditions::from_layer(c, keys);
    let mut prompt = constraint_lines(c);
    if let Some(u) = user {
        prompt.insert(0, u.line());
    }
    let answer =
        LayerText { conditions: requirements.clone(), edges: Vec::new(), body: Vec::new(), close_inline: false, line: 0 };
    Instruction { system: SYSTEM.into(), requirements, prompt, answer }
}
