//! The paper's text encodings of call graphs, written and read as exact
//! inverses (`write(parse(text)) == text`, byte for byte, including the order
//! in which shuffled fields and conditions were written).
//!
//! - Tabular (Figure 7): `[GENERATE GRAPH]` + graph conditions, then `<edges>`,
//!   one `(field is value,...)` line per edge with six shuffled fields, `</edges>`.
//! - Recursive layers (Figure 8): `[GENERATE GRAPH]` + the first layer's
//!   conditions, `<layer>`, `<edges>` with five fields per edge (the source is
//!   the layer's start node), `</edges>`, one `<subgraph of edge_id K>conditions
//!   </subgraph>` line per subgraph, `</layer>`; each further layer is its
//!   conditions line then `<layer>`...
//! - Instructions (Figure 9): `### Question:` with the system prompt,
//!   `Requirements:` (the layer's conditions), `Conditions:` (prompt lines), a
//!   blank line, ` ### Answer: `, then one layer whose body also holds the
//!   intermediate reasoning lines.

use super::graph::{CallGraph, Edge, EdgeId, LayerConditions};

/// Where and why text is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {reason}")]
pub struct TextError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

fn fail<T>(line: usize, column: usize, reason: impl Into<String>) -> Result<T, TextError> {
    Err(TextError { line, column, reason: reason.into() })
}

pub const GENERATE: &str = "[GENERATE GRAPH]";

/// `key:value` pairs joined by `/`, in written order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions(pub Vec<(String, String)>);

impl Conditions {
    /// `text` is the whole pairs list; `line`, `column` locate it for errors.
    pub fn parse(text: &str, line: usize, column: usize) -> Result<Self, TextError> {
        let mut pairs = Vec::new();
        let mut at = column;
        // A trailing '/' occurs in the paper's figures; tolerate it only at the end.
        let body = text.strip_suffix('/').unwrap_or(text);
        for part in body.split('/') {
            let Some((k, v)) = part.split_once(':') else {
                return fail(line, at, format!("condition {part:?} is not key:value"));
            };
            if k.is_empty() || k.contains(char::is_whitespace) {
                return fail(line, at, format!("condition key {k:?} is not a name"));
            }
            if pairs.iter().any(|(seen, _): &(String, String)| seen == k) {
                return fail(line, at, format!("condition {k:?} given twice"));
            }
            pairs.push((k.to_string(), v.to_string()));
            at += part.len() + 1;
        }
        if body.len() != text.len() {
            pairs.push((String::new(), String::new()));
        }
        Ok(Conditions(pairs))
    }

    pub fn write(&self, out: &mut String) {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if k.is_empty() {
                out.push('/');
                continue;
            }
            if i > 0 {
                out.push('/');
            }
            out.push_str(k);
            out.push(':');
            out.push_str(v);
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str, line: usize) -> Result<Option<u64>, TextError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).or_else(|_| fail(line, 1, format!("condition {key}:{v} is not a whole number"))),
        }
    }

    /// The layer conditions these pairs state; unknown keys are errors.
    pub fn layer(&self, line: usize) -> Result<LayerConditions, TextError> {
        if let Some((k, _)) = self.0.iter().find(|(k, _)| !k.is_empty() && !LAYER_KEYS.contains(&k.as_str())) {
            return fail(line, 1, format!("unknown layer condition {k:?}"));
        }
        Ok(LayerConditions {
            id: self.get("id").map(str::to_string),
            start_node: self.get("start_node").map(str::to_string),
            caller: self.get("caller").map(str::to_string),
            num_edges: self.number("num_edges", line)?,
            num_current_edges: self.number("num_current_edges", line)?,
            num_subgraphs: self.number("num_subgraphs", line)?,
            remaining_depth: self.number("remaining_depth", line)?,
            start_edge_id: self.number("start_edge_id", line)?,
            start_communication_at: self.number("start_communication_at", line)?,
            latency: self.number("latency", line)?,
        })
    }

    /// `c` as pairs, in the order `keys` names them (keys `c` lacks are left out).
    pub fn from_layer(c: &LayerConditions, keys: &[&str]) -> Self {
        let mut pairs = Vec::new();
        for &k in keys {
            let v = match k {
                "id" => c.id.clone(),
                "start_node" => c.start_node.clone(),
                "caller" => c.caller.clone(),
                "num_edges" => c.num_edges.map(|v| v.to_string()),
                "num_current_edges" => c.num_current_edges.map(|v| v.to_string()),
                "num_subgraphs" => c.num_subgraphs.map(|v| v.to_string()),
                "remaining_depth" => c.remaining_depth.map(|v| v.to_string()),
                "start_edge_id" => c.start_edge_id.map(|v| v.to_string()),
                "start_communication_at" => c.start_communication_at.map(|v| v.to_string()),
                "latency" => c.latency.map(|v| v.to_string()),
                _ => None,
            };
            if let Some(v) = v {
                pairs.push((k.to_string(), v));
            }
        }
        Conditions(pairs)
    }
}

/// One field of an edge line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    EdgeId(String),
    Source(String),
    Destination(String),
    Type(String),
    Start(u64),
    Finish(u64),
}

impl Field {
    fn name(&self) -> &'static str {
        match self {
            Field::EdgeId(_) => "edge_id",
            Field::Source(_) => "source",
            Field::Destination(_) => "destination",
            Field::Type(_) => "type",
            Field::Start(_) => "communication starts at",
            Field::Finish(_) => "communication finishes at",
        }
    }

    fn parse(text: &str, line: usize, column: usize) -> Result<Self, TextError> {
        let ms = |rest: &str| -> Result<u64, TextError> {
            match rest.strip_suffix(" milliseconds").and_then(|n| n.parse().ok()) {
                Some(v) => Ok(v),
                None => fail(line, column, format!("{text:?}: expected a whole number of milliseconds")),
            }
        };
        if let Some(v) = text.strip_prefix("edge_id is ") {
            if v.is_empty() || !v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
                return fail(line, column, format!("edge_id {v:?} is not a dot-decimal number"));
            }
            return Ok(Field::EdgeId(v.into()));
        }
        let named = |prefix: &str| text.strip_prefix(prefix).filter(|v| !v.is_empty()).map(str::to_string);
        if let Some(v) = named("source is ") {
            return Ok(Field::Source(v));
        }
        if let Some(v) = named("destination is ") {
            return Ok(Field::Destination(v));
        }
        if let Some(v) = named("type is ") {
            return Ok(Field::Type(v));
        }
        if let Some(rest) = text.strip_prefix("communication starts at ") {
            return ms(rest).map(Field::Start);
        }
        if let Some(rest) = text.strip_prefix("communication finishes at ") {
            return ms(rest).map(Field::Finish);
        }
        fail(line, column, format!("unknown edge field {text:?}"))
    }

    fn write(&self, out: &mut String) {
        match self {
            Field::EdgeId(v) => out.push_str(&format!("edge_id is {v}")),
            Field::Source(v) => out.push_str(&format!("source is {v}")),
            Field::Destination(v) => out.push_str(&format!("destination is {v}")),
            Field::Type(v) => out.push_str(&format!("type is {v}")),
            Field::Start(v) => out.push_str(&format!("communication starts at {v} milliseconds")),
            Field::Finish(v) => out.push_str(&format!("communication finishes at {v} milliseconds")),
        }
    }
}

/// One edge line: its fields in written order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLine(pub Vec<Field>);

impl EdgeLine {
    fn parse(text: &str, line: usize) -> Result<Self, TextError> {
        let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) else {
            return fail(line, 1, "an edge line is (field, ...)");
        };
        let mut fields: Vec<Field> = Vec::new();
        let mut column = 2;
        for part in inner.split(',') {
            let field = Field::parse(part, line, column)?;
            if fields.iter().any(|f| f.name() == field.name()) {
                return fail(line, column, format!("field {:?} given twice", field.name()));
            }
            fields.push(field);
            column += part.len() + 1;
        }
        Ok(EdgeLine(fields))
    }

    pub fn write(&self, out: &mut String) {
        out.push('(');
        for (i, f) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            f.write(out);
        }
        out.push(')');
    }

    /// The edge, requiring `edge_id`, `destination`, `type`, both times and, when
    /// `source` is None, a `source` field; `id_prefix` goes before a layer's local id.
    pub fn edge(&self, source: Option<&str>, line: usize) -> Result<Edge, TextError> {
        let mut e = Edge {
            id: Vec::new(),
            source: source.unwrap_or_default().into(),
            destination: String::new(),
            kind: String::new(),
            start: 0,
            finish: 0,
        };
        let mut seen = [false; 6];
        for f in &self.0 {
            match f {
                Field::EdgeId(v) => {
                    e.id = v.split('.').map(|p| p.parse().unwrap_or(u32::MAX)).collect();
                    seen[0] = true
                }
                Field::Source(v) => {
                    if source.is_some() {
                        return fail(line, 1, "a layer's edges have no source field (it is the layer's start_node)");
                    }
                    e.source = v.clone();
                    seen[1] = true
                }
                Field::Destination(v) => (e.destination, seen[2]) = (v.clone(), true),
                Field::Type(v) => (e.kind, seen[3]) = (v.clone(), true),
                Field::Start(v) => (e.start, seen[4]) = (*v, true),
                Field::Finish(v) => (e.finish, seen[5]) = (*v, true),
            }
        }
        let names = ["edge_id", "source", "destination", "type", "communication starts at", "communication finishes at"];
        for (i, name) in names.iter().enumerate() {
            if !seen[i] && !(i == 1 && source.is_some()) {
                return fail(line, 1, format!("edge has no {name:?} field"));
            }
        }
        Ok(e)
    }

    /// The edge of one line as written (`(field, ...)`), from `source`.
    pub fn read(text: &str, source: &str) -> Result<Edge, TextError> {
        EdgeLine::parse(text.trim(), 0)?.edge(Some(source), 0)
    }

    /// `e` with its fields in `order` (names as in [`Field`]; `source` left out
    /// when `with_source` is false).
    pub fn from_edge(e: &Edge, order: &[usize; 6], with_source: bool) -> Self {
        let all = [
            Field::EdgeId(super::graph::format_id(&e.id)),
            Field::Source(e.source.clone()),
            Field::Destination(e.destination.clone()),
            Field::Type(e.kind.clone()),
            Field::Start(e.start),
            Field::Finish(e.finish),
        ];
        EdgeLine(order.iter().filter(|&&i| with_source || i != 1).map(|&i| all[i].clone()).collect())
    }
}

/// Lines of a file with their 1-based numbers, and whether it ended in a newline.
struct Lines<'a> {
    lines: Vec<&'a str>,
    at: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> (Self, bool) {
        let final_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines = if body.is_empty() && !final_newline { Vec::new() } else { body.split('\n').collect() };
        (Lines { lines, at: 0 }, final_newline)
    }
    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.at).copied()
    }
    /// 1-based number of the next line.
    fn number(&self) -> usize {
        self.at + 1
    }
    fn next(&mut self, what: &str) -> Result<&'a str, TextError> {
        let line = self.peek().map_or_else(|| fail(self.number(), 1, format!("text ends where {what} was expected")), Ok)?;
        self.at += 1;
        Ok(line)
    }
    fn expect(&mut self, exact: &str) -> Result<(), TextError> {
        let n = self.number();
        let line = self.next(&format!("{exact:?}"))?;
        if line != exact {
            return fail(n, 1, format!("expected {exact:?}, found {line:?}"));
        }
        Ok(())
    }
    /// A `[GENERATE GRAPH]` line's conditions.
    fn record_head(&mut self) -> Result<Conditions, TextError> {
        let n = self.number();
        let head = self.next("[GENERATE GRAPH]")?;
        let Some(conds) = head.strip_prefix(GENERATE) else {
            return fail(n, 1, format!("a record starts with {GENERATE:?}"));
        };
        Conditions::parse(conds, n, GENERATE.len() + 1)
    }

    fn edges(&mut self) -> Result<Vec<(usize, EdgeLine)>, TextError> {
        self.expect("<edges>")?;
        let mut edges = Vec::new();
        loop {
            let n = self.number();
            let line = self.next("an edge or \"</edges>\"")?;
            if line == "</edges>" {
                return Ok(edges);
            }
            edges.push((n, EdgeLine::parse(line, n)?));
        }
    }
}

fn write_edges(edges: &[EdgeLine], out: &mut String) {
    out.push_str("<edges>\n");
    for e in edges {
        e.write(out);
        out.push('\n');
    }
    out.push_str("</edges>\n");
}

/// Records of one file, and whether the file ended in a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document<T> {
    pub records: Vec<T>,
    pub final_newline: bool,
}

impl<T> Document<T> {
    fn finish(&self, mut out: String) -> String {
        if !self.final_newline && out.ends_with('\n') {
            out.pop();
        }
        out
    }
}

/// A call graph in the tabular encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tabular {
    pub conditions: Conditions,
    pub edges: Vec<EdgeLine>,
    /// Line numbers of the edges, for errors (0 for records not read from text).
    pub lines: Vec<usize>,
}

pub fn parse_tabular(text: &str) -> Result<Document<Tabular>, TextError> {
    let (mut lines, final_newline) = Lines::new(text);
    let mut records = Vec::new();
    while lines.peek().is_some() {
        let conditions = lines.record_head()?;
        let edges = lines.edges()?;
        records.push(Tabular {
            conditions,
            lines: edges.iter().map(|(n, _)| *n).collect(),
            edges: edges.into_iter().map(|(_, e)| e).collect(),
        });
    }
    Ok(Document { records, final_newline })
}

pub fn write_tabular(doc: &Document<Tabular>) -> String {
    let mut out = String::new();
    for r in &doc.records {
        out.push_str(GENERATE);
        r.conditions.write(&mut out);
        out.push('\n');
        write_edges(&r.edges, &mut out);
    }
    doc.finish(out)
}

impl Tabular {
    /// The call graph, with its edges in depth-first order of their ids. Its
    /// structure is checked: unique ids, every parent present, a child's source
    /// equal to its parent's destination.
    pub fn graph(&self) -> Result<CallGraph, TextError> {
        let line = |i: usize| self.lines.get(i).copied().unwrap_or(0);
        let service = self.conditions.get("id").unwrap_or_default().to_string();
        let mut edges = Vec::with_capacity(self.edges.len());
        for (i, e) in self.edges.iter().enumerate() {
            edges.push((line(i), e.edge(None, line(i))?));
        }
        let ids: std::collections::HashMap<EdgeId, usize> =
            edges.iter().enumerate().map(|(i, (_, e))| (e.id.clone(), i)).collect();
        if ids.len() != edges.len() {
            let (n, _) = edges.iter().find(|(_, e)| edges.iter().filter(|(_, o)| o.id == e.id).count() > 1).unwrap_or(&edges[0]);
            return fail(*n, 1, "edge_id given to two edges");
        }
        for (n, e) in &edges {
            if e.id.len() > 1 {
                match ids.get(&e.id[..e.id.len() - 1]) {
                    None => return fail(*n, 1, format!("edge {} has no parent edge", super::graph::format_id(&e.id))),
                    Some(&p) if edges[p].1.destination != e.source => {
                        return fail(
                            *n,
                            1,
                            format!(
                                "edge {}'s source {} is not its parent's destination {}",
                                super::graph::format_id(&e.id),
                                e.source,
                                edges[p].1.destination
                            ),
                        );
                    }
                    _ => {}
                }
            }
        }
        let mut edges: Vec<Edge> = edges.into_iter().map(|(_, e)| e).collect();
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(CallGraph { service, edges })
    }
}

/// One layer as written: conditions, edges, then the body (subgraph lines and,
/// in the instruction encoding, reasoning lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerText {
    pub conditions: Conditions,
    pub edges: Vec<EdgeLine>,
    pub body: Vec<BodyLine>,
    /// `</layer>` ends the last body line instead of standing alone.
    pub close_inline: bool,
    /// Line of `<layer>`, for errors (0 when not read from text).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyLine {
    Subgraph {
        edge: u64,
        conditions: Conditions,
    },
    /// A reasoning line (instruction encoding).
    Text(String),
}

const SUBGRAPH: &str = "<subgraph of edge_id ";

fn parse_layer(lines: &mut Lines<'_>, conditions: Conditions) -> Result<LayerText, TextError> {
    let line = lines.number();
    lines.expect("<layer>")?;
    let edges = lines.edges()?.into_iter().map(|(_, e)| e).collect();
    let mut body = Vec::new();
    loop {
        let n = lines.number();
        let text = lines.next("\"</layer>\"")?;
        if text == "</layer>" {
            return Ok(LayerText { conditions, edges, body, close_inline: false, line });
        }
        let (text, closes) = match text.strip_suffix("</layer>") {
            Some(t) => (t, true),
            None => (text, false),
        };
        if let Some(rest) = text.strip_prefix(SUBGRAPH) {
            let Some((edge, rest)) = rest.split_once('>') else {
                return fail(n, SUBGRAPH.len() + 1, "subgraph tag is not closed");
            };
            let Ok(edge) = edge.parse() else {
                return fail(n, SUBGRAPH.len() + 1, format!("subgraph edge id {edge:?} is not a number"));
            };
            let Some(conds) = rest.strip_suffix("</subgraph>") else {
                return fail(n, text.len(), "a subgraph line ends with \"</subgraph>\"");
            };
            let column = text.len() - rest.len() + 1;
            body.push(BodyLine::Subgraph { edge, conditions: Conditions::parse(conds, n, column)? });
        } else if text.starts_with('<') {
            return fail(n, 1, format!("unexpected tag in a layer: {text:?}"));
        } else {
            body.push(BodyLine::Text(text.to_string()));
        }
        if closes {
            return Ok(LayerText { conditions, edges, body, close_inline: true, line });
        }
    }
}

fn write_layer_body(layer: &LayerText, out: &mut String) {
    out.push_str("<layer>\n");
    write_edges(&layer.edges, out);
    for (i, b) in layer.body.iter().enumerate() {
        match b {
            BodyLine::Subgraph { edge, conditions } => {
                out.push_str(SUBGRAPH);
                out.push_str(&edge.to_string());
                out.push('>');
                conditions.write(out);
                out.push_str("</subgraph>");
            }
            BodyLine::Text(t) => out.push_str(t),
        }
        if layer.close_inline && i + 1 == layer.body.len() {
            out.push_str("</layer>");
        }
        out.push('\n');
    }
    if !layer.close_inline || layer.body.is_empty() {
        out.push_str("</layer>\n");
    }
}

/// A call graph in the recursive layer encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers(pub Vec<LayerText>);

pub fn parse_layers(text: &str) -> Result<Document<Layers>, TextError> {
    let (mut lines, final_newline) = Lines::new(text);
    let mut records = Vec::new();
    while lines.peek().is_some() {
        let head = lines.record_head()?;
        let mut layers = vec![parse_layer(&mut lines, head)?];
        while let Some(next) = lines.peek().filter(|l| !l.starts_with(GENERATE)) {
            let n = lines.number();
            lines.at += 1;
            layers.push(parse_layer(&mut lines, Conditions::parse(next, n, 1)?)?);
        }
        records.push(Layers(layers));
    }
    Ok(Document { records, final_newline })
}

pub fn write_layers(doc: &Document<Layers>) -> String {
    let mut out = String::new();
    for r in &doc.records {
        for (i, layer) in r.0.iter().enumerate() {
            if i == 0 {
                out.push_str(GENERATE);
            }
            layer.conditions.write(&mut out);
            out.push('\n');
            write_layer_body(layer, &mut out);
        }
    }
    doc.finish(out)
}

/// One instruction-tuning sample: the prompt and the answer layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The system prompt after `### Question: `.
    pub system: String,
    pub requirements: Conditions,
    /// The lines under `Conditions:` (natural-language constraints and user instructions).
    pub prompt: Vec<String>,
    pub answer: LayerText,
}

const QUESTION: &str = "### Question: ";
const ANSWER: &str = " ### Answer: ";

pub fn parse_instructions(text: &str) -> Result<Document<Instruction>, TextError> {
    let (mut lines, final_newline) = Lines::new(text);
    let mut records = Vec::new();
    while lines.peek().is_some() {
        let n = lines.number();
        let head = lines.next(QUESTION)?;
        let Some(system) = head.strip_prefix(QUESTION) else {
            return fail(n, 1, format!("a sample starts with {QUESTION:?}"));
        };
        lines.expect("Requirements:")?;
        let n = lines.number();
        let requirements = Conditions::parse(lines.next("the requirements")?, n, 1)?;
        lines.expect("Conditions:")?;
        let mut prompt = Vec::new();
        loop {
            let line = lines.next("a blank line before the answer")?;
            if line.is_empty() {
                break;
            }
            prompt.push(line.to_string());
        }
        lines.expect(ANSWER)?;
        let answer = parse_layer(&mut lines, requirements.clone())?;
        records.push(Instruction { system: system.to_string(), requirements, prompt, answer });
    }
    Ok(Document { records, final_newline })
}

pub fn write_instructions(doc: &Document<Instruction>) -> String {
    let mut out = String::new();
    for r in &doc.records {
        r.write_question(&mut out);
        write_layer_body(&r.answer, &mut out);
    }
    doc.finish(out)
}

impl Instruction {
    /// The question, up to and including the answer's header line: the
    /// prompt a model continues with the answer layer.
    pub fn write_question(&self, out: &mut String) {
        out.push_str(QUESTION);
        out.push_str(&self.system);
        out.push_str("\nRequirements:\n");
        self.requirements.write(out);
        out.push_str("\nConditions:\n");
        for p in &self.prompt {
            out.push_str(p);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(ANSWER);
        out.push('\n');
    }

    /// The answer layer as written after the question.
    pub fn write_answer(&self, out: &mut String) {
        write_layer_body(&self.answer, out);
    }
}

impl LayerText {
    /// The layer's conditions, edges (source = the layer's start node) and
    /// subgraph conditions, typed.
    pub fn layer(&self) -> Result<super::graph::Layer, TextError> {
        let conditions = self.conditions.layer(self.line)?;
        // Only the first layer's conditions are ever dropped, and it starts at USER.
        let source = conditions.start_node.clone().unwrap_or_else(|| "USER".into());
        let mut edges = Vec::with_capacity(self.edges.len());
        for (i, e) in self.edges.iter().enumerate() {
            let line = if self.line == 0 { 0 } else { self.line + 2 + i };
            let edge = e.edge(Some(&source), line)?;
            if edge.id.len() != 1 {
                return fail(line, 1, "a layer's edge ids are whole numbers");
            }
            edges.push(edge);
        }
        let mut subgraphs = Vec::new();
        for b in &self.body {
            if let BodyLine::Subgraph { edge, conditions } = b {
                subgraphs.push((*edge, conditions.layer(self.line)?));
            }
        }
        Ok(super::graph::Layer { conditions, edges, subgraphs })
    }
}

/// Keys of a layer's conditions, in a fixed order before shuffling.
const LAYER_KEYS: [&str; 10] = [
    "id",
    "start_node",
    "caller",
    "num_edges",
    "num_current_edges",
    "num_subgraphs",
    "remaining_depth",
    "start_edge_id",
    "start_communication_at",
    "latency",
];

/// `c` with its keys shuffled and, when `p_drop > 0`, each key but `id` left
/// out with that probability (§4.1: shuffling removes spurious order, dropping
/// lets users prompt with any subset).
pub fn shuffled_conditions(c: &LayerConditions, rng: &mut impl rand::Rng, p_drop: f64) -> Conditions {
    use rand::seq::SliceRandom;
    let mut keys: Vec<&str> =
        LAYER_KEYS.iter().copied().filter(|k| *k == "id" || p_drop <= 0.0 || !rng.random_bool(p_drop)).collect();
    keys.shuffle(rng);
    Conditions::from_layer(c, &keys)
}

pub fn shuffled_fields(rng: &mut impl rand::Rng) -> [usize; 6] {
    use rand::seq::SliceRandom;
    let mut order = [0, 1, 2, 3, 4, 5];
    order.shuffle(rng);
    order
}

/// A training sample in the tabular encoding: graph conditions (`latency`,
/// `num_edges`, `depth`, `id`) shuffled and dropped with `p_drop` (never `id`),
/// every edge's six fields shuffled.
pub fn encode_tabular(g: &CallGraph, rng: &mut impl rand::Rng, p_drop: f64) -> Tabular {
    use rand::seq::SliceRandom;
    let all = [
        ("latency", g.latency().to_string()),
        ("num_edges", g.edges.len().to_string()),
        ("depth", g.depth().to_string()),
        ("id", g.service.clone()),
    ];
    let mut pairs: Vec<(String, String)> = all
        .into_iter()
        .filter(|(k, _)| *k == "id" || p_drop <= 0.0 || !rng.random_bool(p_drop))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    pairs.shuffle(rng);
    let edges = g.edges.iter().map(|e| EdgeLine::from_edge(e, &shuffled_fields(rng), true)).collect();
    Tabular { conditions: Conditions(pairs), edges, lines: Vec::new() }
}

/// A training sample in the recursive layer encoding (pre-training, §4.3):
/// the graph's layers depth-first, the first layer's conditions dropped with
/// `p_drop` (never `id`), every condition list and edge shuffled.
pub fn encode_layers(g: &CallGraph, rng: &mut impl rand::Rng, p_drop: f64) -> Layers {
    let layers = g.layers();
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let conditions = shuffled_conditions(&l.conditions, rng, if i == 0 { p_drop } else { 0.0 });
        let edges = l.edges.iter().map(|e| EdgeLine::from_edge(e, &shuffled_fields(rng), false)).collect();
        let body = l
            .subgraphs
            .iter()
            .map(|(edge, c)| BodyLine::Subgraph { edge: *edge, conditions: shuffled_conditions(c, rng, 0.0) })
            .collect();
        out.push(LayerText { conditions, edges, body, close_inline: false, line: 0 });
    }
    Layers(out)
}
