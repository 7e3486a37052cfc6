//! TraceLLM text encodings and Appendix B validation on the Alibaba call graphs.

mod common;
use common::*;

use gent::llm::graph::{CallGraph, Layer, LayerConditions};
use gent::llm::text::{self, Conditions};
use gent::llm::validate::{self, Requested, Violation};

fn read(rel: &str) -> String {
    std::fs::read_to_string(data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The layer example without its last, truncated record.
fn complete_layers() -> String {
    let all = read("alibaba/recursive_layers_example.txt");
    all[..all.rfind("[GENERATE GRAPH]").unwrap()].to_string()
}

fn train_graphs() -> Vec<(text::Tabular, CallGraph)> {
    let doc = text::parse_tabular(&read("alibaba/callgraphs_train.txt")).unwrap();
    doc.records
        .into_iter()
        .map(|r| {
            let g = r.graph().unwrap();
            (r, g)
        })
        .collect()
}

#[test]
fn every_encoding_reads_and_writes_back_byte_for_byte() {
    let tabular = read("alibaba/callgraphs_train.txt");
    let doc = text::parse_tabular(&tabular).unwrap();
    assert_eq!(doc.records.len(), 911);
    assert_eq!(text::write_tabular(&doc), tabular);

    // The example file stops in the middle of its last record: that is refused,
    // and every record before it reads back exactly.
    let all = read("alibaba/recursive_layers_example.txt");
    let e = text::parse_layers(&all).unwrap_err();
    assert_eq!((e.line, e.reason.as_str()), (585, "text ends where \"<layer>\" was expected"));
    let layers = complete_layers();
    let doc = text::parse_layers(&layers).unwrap();
    assert_eq!(doc.records.len(), 46);
    assert_eq!(text::write_layers(&doc), layers);

    let instructions = read("alibaba/recursive_instruction_example.txt");
    let doc = text::parse_instructions(&instructions).unwrap();
    assert_eq!(doc.records.len(), 24);
    assert_eq!(text::write_instructions(&doc), instructions);
}

#[test]
fn tabular_conditions_describe_their_graphs() {
    for (record, g) in train_graphs() {
        let c = &record.conditions;
        let num = |k: &str| c.get(k).map(|v| v.parse::<u64>().unwrap());
        assert_eq!(num("num_edges").unwrap_or(g.edges.len() as u64), g.edges.len() as u64, "{}", g.service);
        assert_eq!(num("depth").unwrap_or(g.depth()), g.depth(), "{}", g.service);
        assert_eq!(num("latency").unwrap_or(g.latency()), g.latency(), "{}", g.service);
        assert!(
            validate::graph(&g, &Requested { num_edges: num("num_edges"), depth: num("depth"), latency: num("latency") })
                .is_empty()
        );
    }
}

/// `have` agrees with `want` on every condition `want` states.
fn agrees(want: &LayerConditions, have: &LayerConditions) -> bool {
    fn same<T: PartialEq>(w: &Option<T>, h: &Option<T>) -> bool {
        w.is_none() || w == h
    }
    same(&want.id, &have.id)
        && same(&want.start_node, &have.start_node)
        && same(&want.caller, &have.caller)
        && same(&want.num_edges, &have.num_edges)
        && same(&want.num_current_edges, &have.num_current_edges)
        && same(&want.num_subgraphs, &have.num_subgraphs)
        && same(&want.remaining_depth, &have.remaining_depth)
        && same(&want.start_edge_id, &have.start_edge_id)
        && same(&want.start_communication_at, &have.start_communication_at)
        && same(&want.latency, &have.latency)
}

fn same_layers(example: &[Layer], ours: &[Layer]) -> bool {
    example.len() == ours.len()
        && example.iter().zip(ours).all(|(e, o)| {
            agrees(&e.conditions, &o.conditions)
                && e.edges == o.edges
                && e.subgraphs.len() == o.subgraphs.len()
                && e.subgraphs.iter().zip(&o.subgraphs).all(|((ke, ce), (ko, co))| ke == ko && agrees(ce, co))
        })
}

#[test]
fn the_layer_decomposition_reproduces_the_papers_examples() {
    let graphs = train_graphs();
    let doc = text::parse_layers(&complete_layers()).unwrap();
    let mut matched = 0;
    for record in &doc.records {
        let example: Vec<Layer> = record.0.iter().map(|l| l.layer().unwrap()).collect();
        let id = example[0].conditions.id.clone().unwrap();
        if graphs.iter().any(|(_, g)| g.service == id && same_layers(&example, &g.layers())) {
            matched += 1;
        } else {
            let candidates = graphs.iter().filter(|(_, g)| g.service == id).count();
            println!("not matched: {id} at line {} ({candidates} training graphs of that service)", record.0[0].line);
        }
    }
    println!("{matched} of {} example records are the decomposition of a training graph", doc.records.len());
    assert_eq!(matched, doc.records.len());
}

#[test]
fn every_real_layer_satisfies_appendix_b() {
    for (_, g) in train_graphs() {
        for l in g.layers() {
            assert_eq!(validate::layer(&l), vec![], "{}: {l:?}", g.service);
        }
    }
    for record in text::parse_layers(&complete_layers()).unwrap().records {
        for l in &record.0 {
            let layer = l.layer().unwrap();
            assert_eq!(validate::layer(&layer), vec![], "example layer at line {}", l.line);
        }
    }
    for record in text::parse_instructions(&read("alibaba/recursive_instruction_example.txt")).unwrap().records {
        let layer = record.answer.layer().unwrap();
        assert_eq!(validate::layer(&layer), vec![], "instruction answer at line {}", record.answer.line);
    }
}

/// A layer with room for every rule: node A calls B (edge 1, 0–10 ms) and C
/// (edge 2, 2–5 ms); B's subgraph holds 3 edges, 2 levels.
fn valid_layer() -> Layer {
    let mut g = CallGraph { service: "S_1".into(), edges: Vec::new() };
    let mut edge = |id: &[u32], src: &str, dst: &str, start, finish| {
        g.edges.push(gent::llm::Edge {
            id: id.to_vec(),
            source: src.into(),
            destination: dst.into(),
            kind: "rpc".into(),
            start,
            finish,
        });
    };
    edge(&[0], "USER", "A", 0, 20);
    edge(&[0, 1], "A", "B", 0, 10);
    edge(&[0, 1, 1], "B", "D", 1, 4);
    edge(&[0, 1, 2], "B", "E", 4, 8);
    edge(&[0, 1, 2, 1], "E", "F", 5, 6);
    edge(&[0, 2], "A", "C", 2, 5);
    let layers = g.layers();
    assert_eq!(layers.len(), 4);
    let l = layers[1].clone();
    assert_eq!(validate::layer(&l), vec![]);
    l
}

fn broken(change: impl FnOnce(&mut Layer)) -> Vec<Violation> {
    let mut l = valid_layer();
    change(&mut l);
    validate::layer(&l)
}

#[test]
fn each_appendix_b_rule_is_checked() {
    let v = broken(|l| {
        l.edges.pop();
    });
    assert!(v.contains(&Violation::EdgeCount { expected: 2, found: 1 }), "{v:?}");
    let v = broken(|l| l.edges[1].id = vec![3]);
    assert!(matches!(v[0], Violation::EdgeId { index: 1, expected: 2, .. }), "{v:?}");
    let v = broken(|l| l.conditions.start_communication_at = Some(1));
    assert!(v.contains(&Violation::StartsEarly { id: 1, start: 0, min: 1 }), "{v:?}");
    let v = broken(|l| l.edges[1].start = 6);
    assert!(v.contains(&Violation::StartAfterFinish { id: 2, start: 6, finish: 5 }), "{v:?}");
    let v = broken(|l| l.conditions.latency = Some(9));
    assert!(v.contains(&Violation::FinishesLate { id: 1, finish: 10, latency: 9 }), "{v:?}");
    let v = broken(|l| l.conditions.remaining_depth = Some(0));
    assert!(v.iter().any(|x| matches!(x, Violation::UnexpectedSubgraphs { .. })), "{v:?}");
    let v = broken(|l| l.subgraphs[0].0 = 7);
    assert!(v.contains(&Violation::UnknownEdge { edge: 7 }), "{v:?}");
    let v = broken(|l| {
        let s = l.subgraphs[0].clone();
        l.subgraphs.push(s);
    });
    assert!(v.contains(&Violation::DuplicateSubgraph { edge: 1 }), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.num_edges = None);
    assert!(v.contains(&Violation::MissingCondition { edge: 1, key: "num_edges" }), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.remaining_depth = Some(2));
    assert!(v.contains(&Violation::DepthNotReduced { edge: 1, found: 2, layer: 2 }), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.remaining_depth = Some(0));
    assert!(v.contains(&Violation::DepthNotReached { expected: 1 }), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.start_node = Some("C".into()));
    assert!(v.iter().any(|x| matches!(x, Violation::StartNode { edge: 1, .. })), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.caller = Some("B".into()));
    assert!(v.iter().any(|x| matches!(x, Violation::Caller { edge: 1, .. })), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.latency = Some(11));
    assert!(v.contains(&Violation::SubgraphLatency { edge: 1, found: 11, finish: 10 }), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.start_communication_at = Some(11));
    assert!(v.contains(&Violation::SubgraphStart { edge: 1, found: 11, latency: 10 }), "{v:?}");
    let v = broken(|l| l.subgraphs[0].1.num_current_edges = Some(4));
    assert!(v.contains(&Violation::SubgraphEdges { edge: 1, current: 4, total: 3 }), "{v:?}");
    let v = broken(|l| l.conditions.num_edges = Some(7));
    assert!(v.contains(&Violation::EdgeBudget { expected: 5, found: 3 }), "{v:?}");
    // A last level (remaining_depth 0, no subgraphs) must hold all its edges,
    // even when its own count is left to the model (a first layer).
    let v = broken(|l| {
        l.conditions.remaining_depth = Some(0);
        l.conditions.num_current_edges = None;
        l.conditions.num_subgraphs = None;
        l.subgraphs.clear();
    });
    assert_eq!(v, vec![Violation::EdgeBudget { expected: 3, found: 0 }], "{v:?}");
    let v = broken(|l| l.conditions.num_subgraphs = Some(2));
    assert!(v.contains(&Violation::SubgraphCount { expected: 2, found: 1 }), "{v:?}");

    let g = CallGraph { service: "S".into(), edges: vec![valid_layer().edges[0].clone()] };
    let v = validate::graph(&g, &Requested { num_edges: Some(2), depth: Some(2), latency: Some(5) });
    assert_eq!(v.len(), 3, "{v:?}");
}

#[test]
fn malformed_text_is_refused_with_its_position_and_reason() {
    let e = text::parse_tabular("[GENERATE GRAPH]id:S_1\n<edges>\n(edge_id is 0,source is USER,destination is A,type is http,communication starts at 0 milliseconds)\n</edges>\n")
        .unwrap()
        .records[0]
        .graph()
        .unwrap_err();
    assert_eq!((e.line, e.reason.as_str()), (3, "edge has no \"communication finishes at\" field"));
    let e = text::parse_tabular("[GENERATE GRAPH]id:S_1\n<edges>\n(edge_id is 0,colour is red)\n</edges>\n").unwrap_err();
    assert_eq!((e.line, e.column), (3, 15), "{e}");
    assert!(e.reason.contains("colour"), "{e}");
    let e = text::parse_tabular("[GENERATE GRAPH]id:S_1/latency\n").unwrap_err();
    assert_eq!((e.line, e.column), (1, 24), "{e}");
    let e = text::parse_layers(
        "[GENERATE GRAPH]id:S_1\n<layer>\n<edges>\n</edges>\n<subgraph of edge_id x>a:1</subgraph>\n</layer>\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    let e = text::parse_layers("[GENERATE GRAPH]id:S_1\n<layer>\n<edges>\n").unwrap_err();
    assert!(e.reason.contains("text ends"), "{e}");
    let e = text::parse_tabular("[GENERATE GRAPH]id:S_1\n<edges>\n(edge_id is 0.1,source is A,destination is B,type is rpc,communication starts at 0 milliseconds,communication finishes at 1 milliseconds)\n</edges>\n")
        .unwrap()
        .records[0]
        .graph()
        .unwrap_err();
    assert!(e.reason.contains("no parent"), "{e}");
    assert!(Conditions::parse("a:1/a:2", 1, 1).is_err());
}

#[test]
fn the_tokenizer_encodes_every_text_exactly_and_keeps_layers_short() {
    let train = read("alibaba/callgraphs_train.txt");
    let examples = [read("alibaba/recursive_layers_example.txt"), read("alibaba/recursive_instruction_example.txt")];
    let tok = gent::llm::Tokenizer::train([train.as_str(), examples[0].as_str(), examples[1].as_str()], 2, 4096, 4096);
    println!("vocabulary: {} tokens", tok.len());
    assert!(tok.len() < 1000, "{}", tok.len());
    for text in [&train, &examples[0], &examples[1]] {
        assert_eq!(&tok.decode(&tok.encode(text)), text);
    }
    for word in ["edge_id", " milliseconds", "layer", "num_edges", " is"] {
        assert!(tok.id(word).is_some(), "{word:?} is a token");
    }
    // A layer record of the example file: tokens per layer.
    let layers = text::parse_layers(&complete_layers()).unwrap();
    let mut lengths: Vec<usize> = Vec::new();
    for r in &layers.records {
        for l in &r.0 {
            let doc = text::Document { records: vec![text::Layers(vec![l.clone()])], final_newline: true };
            lengths.push(tok.encode(&text::write_layers(&doc)).len());
        }
    }
    lengths.sort();
    println!("tokens per layer: median {}, max {}", lengths[lengths.len() / 2], lengths[lengths.len() - 1]);
    // Anything at all round-trips, unknown words and non-ASCII included.
    for odd in ["", "Ünïcode → ✓", "unseenword MS_99999\t\r\n", "\u{0}\u{7f}"] {
        assert_eq!(tok.decode(&tok.encode(odd)), odd);
    }
    let stored = gent::llm::Tokenizer::from_tokens(tok.tokens().to_vec());
    assert_eq!(stored.encode(&train), tok.encode(&train));
}

#[test]
fn encoded_training_samples_parse_back_to_their_graphs() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let graphs = train_graphs();
    let mut tabular = text::Document { records: Vec::new(), final_newline: true };
    let mut layered = text::Document { records: Vec::new(), final_newline: true };
    for (_, g) in &graphs {
        tabular.records.push(text::encode_tabular(g, &mut rng, 0.5));
        layered.records.push(text::encode_layers(g, &mut rng, 0.5));
    }
    let back = text::parse_tabular(&text::write_tabular(&tabular)).unwrap();
    for ((_, g), r) in graphs.iter().zip(&back.records) {
        assert_eq!(&r.graph().unwrap(), g);
    }
    let back = text::parse_layers(&text::write_layers(&layered)).unwrap();
    for ((_, g), r) in graphs.iter().zip(&back.records) {
        let parsed: Vec<Layer> = r.0.iter().map(|l| l.layer().unwrap()).collect();
        assert!(same_layers(&parsed, &g.layers()), "{}", g.service);
        assert!(parsed.iter().all(|l| validate::layer(l).is_empty()));
    }
}

#[test]
fn seen_ids_are_one_token_and_unseen_ids_are_spelled() {
    let train = read("alibaba/callgraphs_train.txt");
    let tok = gent::llm::Tokenizer::train([train.as_str()], 2, 4096, 4096);
    let digits = gent::llm::Tokenizer::train([train.as_str()], 2, 4096, 0);
    // The microservice called most often in the data, and the service id of its first graph.
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for m in train.match_indices(" MS_") {
        *counts.entry(&train[m.0..m.0 + 9]).or_default() += 1;
    }
    let (&popular, _) = counts.iter().max_by_key(|(k, c)| (**c, std::cmp::Reverse(**k))).unwrap();
    assert_eq!(tok.encode(popular).len(), 1, "{popular:?} is one token");
    assert_eq!(digits.encode(popular).len(), 6, "{popular:?} spelled: ` MS_` and five digits");
    assert_eq!(tok.encode("id:S_000034483").len(), 3, "`id`, `:` and the service id");
    // An id never seen is spelled; so is one cut inside a longer digit run.
    assert_eq!(tok.encode(" MS_99999"), digits.encode(" MS_99999"));
    let long = format!("{popular}{}", "0".repeat(30));
    assert_eq!(tok.decode(&tok.encode(&long)), long);
    assert_eq!(tok.encode(&long), digits.encode(&long));
    assert_eq!(digits.identifiers(), 0);
    let (whole, spelled) = (tok.encode(&train).len(), digits.encode(&train).len());
    println!(
        "vocabulary {} ({} ids) against {}; the training text in {whole} tokens against {spelled} ({:.0}% fewer)",
        tok.len(),
        tok.identifiers(),
        digits.len(),
        100.0 * (1.0 - whole as f64 / spelled as f64)
    );
    assert!(tok.identifiers() > 200 && whole * 100 < spelled * 85, "ids shorten the text by at least 15%");
    assert_eq!(tok.decode(&tok.encode(&train)), train);
    let stored = gent::llm::Tokenizer::from_tokens(tok.tokens().to_vec());
    assert_eq!(stored.encode(&train), tok.encode(&train));
}

#[test]
fn constrained_decoding_names_known_microservices_as_tokens_or_spelled_out() {
    use gent::llm::generate::{Generator, Request, Sampling};
    use rand::SeedableRng;
    // MS_11111 is seen twice (a token), MS_22222 once (spelled).
    let text = "destination is MS_11111, destination is MS_11111, destination is MS_22222 edge_id type is http rpc mc db mq communication starts at milliseconds";
    let tok = gent::llm::Tokenizer::train([text], 2, 100, 100);
    assert!(tok.id(" MS_11111").is_some() && tok.id(" MS_22222").is_none());
    let mut model = RandomModel { rng: rand::rngs::StdRng::seed_from_u64(9), vocab: tok.len() };
    let known = ["MS_11111".to_string(), "MS_22222".to_string(), "not an id".to_string()];
    let mut g = Generator::new(&mut model, &tok, Sampling::default(), 4).unwrap().known_destinations(&known);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..10 {
        let out = g.graph(&Request { service: "S_1".into(), num_edges: 6, depth: 2, latency: 30 }).unwrap();
        for e in &out.graph.edges {
            *seen.entry(e.destination.clone()).or_default() += 1;
        }
        let back = text::parse_layers(&out.text).unwrap();
        assert_eq!(back.records[0].0.len(), out.layers.len());
    }
    println!("destinations: {seen:?}");
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["MS_11111", "MS_22222"], "both forms, nothing else");
    // Without a list, any five digits may be spelled and any id token named.
    let mut g = Generator::new(&mut model, &tok, Sampling::default(), 4).unwrap();
    let out = g.graph(&Request { service: "S_1".into(), num_edges: 30, depth: 2, latency: 30 }).unwrap();
    assert!(out.graph.edges.iter().all(|e| gent::llm::generate::microservice_digits(&e.destination).is_some()));
    assert!(out.graph.edges.iter().any(|e| e.destination != "MS_11111"));
}

proptest::proptest! {
    #[test]
    fn any_text_survives_the_tokenizer(s in "(?s).{0,200}") {
        let tok = gent::llm::Tokenizer::train(["edge_id is 0,type is http"], 1, 100, 4096);
        proptest::prop_assert_eq!(tok.decode(&tok.encode(&s)), s);
    }
}

/// A "model" with random weights: scores drawn afresh for every step.
struct RandomModel {
    rng: rand::rngs::StdRng,
    vocab: usize,
}

impl gent::llm::generate::NextToken for RandomModel {
    fn logits(&mut self, _context: &[u32]) -> Vec<f32> {
        use rand::Rng;
        (0..self.vocab).map(|_| self.rng.random_range(-5.0..5.0)).collect()
    }
}

#[test]
fn constrained_decoding_gives_only_valid_graphs_of_the_requested_size_whatever_the_weights() {
    use gent::llm::generate::{Generator, Request, Sampling};
    use rand::SeedableRng;
    let train = read("alibaba/callgraphs_train.txt");
    let tok = gent::llm::Tokenizer::train([train.as_str()], 2, 4096, 4096);
    let mut model = RandomModel { rng: rand::rngs::StdRng::seed_from_u64(3), vocab: tok.len() };
    let mut checked = 0;
    for (sampling, seed) in [
        (Sampling::default(), 1),
        (Sampling { temperature: 0.0, ..Sampling::default() }, 2),
        (Sampling { temperature: 0.7, top_k: 3, top_p: 0.9 }, 3),
    ] {
        let mut g = Generator::new(&mut model, &tok, sampling, seed).unwrap();
        for num_edges in 1..=30u64 {
            for depth in 1..=6u64.min(num_edges) {
                let request = Request { service: "S_000000001".into(), num_edges, depth, latency: 40 };
                let out = g.graph(&request).unwrap();
                for l in &out.layers {
                    assert_eq!(validate::layer(l), vec![], "{request:?}\n{}", out.text);
                }
                let asked = Requested { num_edges: Some(num_edges), depth: Some(depth), latency: Some(40) };
                assert_eq!(validate::graph(&out.graph, &asked), vec![], "{request:?}\n{}", out.text);
                // The text is the paper's layer encoding and reads back to the same layers.
                let back = text::parse_layers(&out.text).unwrap();
                let layers: Vec<Layer> = back.records[0].0.iter().map(|l| l.layer().unwrap()).collect();
                assert_eq!(layers, out.layers);
                checked += 1;
            }
        }
    }
    println!("{checked} graphs generated with random weights, all valid");
    // Given the microservices seen in training, every destination is one of them.
    let known: Vec<String> = train_graphs().into_iter().flat_map(|(_, g)| g.edges.into_iter().map(|e| e.destination)).collect();
    let mut g = Generator::new(&mut model, &tok, Sampling::default(), 5).unwrap().known_destinations(&known);
    for (num_edges, depth) in [(1, 1), (12, 3), (30, 6)] {
        let request = Request { service: "S_000000001".into(), num_edges, depth, latency: 40 };
        let out = g.graph(&request).unwrap();
        let asked = Requested { num_edges: Some(num_edges), depth: Some(depth), latency: Some(40) };
        assert_eq!(validate::graph(&out.graph, &asked), vec![], "{request:?}\n{}", out.text);
        for e in &out.graph.edges {
            assert!(known.contains(&e.destination), "{} was never called in training", e.destination);
        }
    }
    assert!(
        Generator::new(&mut model, &tok, Sampling::default(), 0)
            .unwrap()
            .graph(&Request { service: "S".into(), num_edges: 2, depth: 3, latency: 1 })
            .is_err()
    );
}

/// The training call graphs, their calls, the microservices they name, and
/// a tokenizer of their text.
fn calls_of_training() -> (Vec<CallGraph>, gent::llm::calls::KnownCalls, Vec<String>, gent::llm::Tokenizer) {
    let train = read("alibaba/callgraphs_train.txt");
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).collect();
    let known = gent::llm::calls::KnownCalls::of(&graphs);
    let names: Vec<String> = graphs.iter().flat_map(|g| g.edges.iter().map(|e| e.destination.clone())).collect();
    let tok = gent::llm::Tokenizer::train([train.as_str()], 2, 4096, 4096);
    (graphs, known, names, tok)
}

/// A request for a graph of `g`'s service and size.
fn request_like(g: &CallGraph) -> gent::llm::generate::Request {
    gent::llm::generate::Request { service: g.service.clone(), num_edges: g.edges.len() as u64, depth: g.depth(), latency: 40 }
}

#[test]
fn constrained_decoding_keeps_to_the_calls_of_training_and_stays_valid() {
    use gent::llm::generate::{Generator, Request, Sampling};
    use rand::SeedableRng;
    let (graphs, known, names, tok) = calls_of_training();
    let mut model = RandomModel { rng: rand::rngs::StdRng::seed_from_u64(7), vocab: tok.len() };
    let mut g = Generator::new(&mut model, &tok, Sampling::default(), 11).unwrap().known_destinations(&names).known_calls(&known);
    let (mut calls, mut backed_off) = (0usize, 0usize);
    // Every service's first graph's request, and the grid on a few services.
    let mut requests: Vec<Request> = graphs.iter().take(120).map(request_like).collect();
    for num_edges in 1..=30u64 {
        for depth in 1..=6u64.min(num_edges) {
            requests.push(Request { service: graphs[num_edges as usize].service.clone(), num_edges, depth, latency: 40 });
        }
    }
    for request in &requests {
        let out = g.graph(request).unwrap();
        let asked = Requested { num_edges: Some(request.num_edges), depth: Some(request.depth), latency: Some(40) };
        assert_eq!(validate::graph(&out.graph, &asked), vec![], "{request:?}\n{}", out.text);
        for e in &out.graph.edges {
            calls += 1;
            let allowed = known.destinations(&request.service, &e.source);
            if allowed.is_empty() {
                // A node never seen calling: any microservice of training.
                backed_off += 1;
                assert!(names.contains(&e.destination));
                continue;
            }
            assert!(allowed.contains(&e.destination), "{} called {} in {}", e.source, e.destination, request.service);
            assert!(known.kinds(&e.source, &e.destination).contains(&e.kind), "{e:?}");
        }
        if let Some(first) = out.graph.edges.first() {
            let entries = known.destinations(&request.service, "USER");
            assert!(entries.contains(&first.destination), "{request:?} entered at {}", first.destination);
        }
    }
    println!("{} graphs, {calls} calls, {backed_off} from nodes never seen calling", requests.len());
    assert!(backed_off * 4 < calls, "most calls keep to the calls of training");
}

#[test]
fn the_counts_of_training_calls_near_the_requested_size_bring_generated_calls_near_real_ones() {
    use gent::llm::eval::kl_popular_calls;
    use gent::llm::generate::{CallPrior, Generator, Request, Sampling};
    use rand::SeedableRng;
    let (graphs, known, names, tok) = calls_of_training();
    let real: Vec<CallGraph> = graphs.iter().step_by(4).cloned().collect();
    let requests: Vec<Request> = real.iter().map(request_like).collect();
    // A model that knows nothing: only the counts can bring the calls near.
    let kl = |prior: CallPrior| {
        let mut model = RandomModel { rng: rand::rngs::StdRng::seed_from_u64(7), vocab: tok.len() };
        let mut g = Generator::new(&mut model, &tok, Sampling::default(), 11)
            .unwrap()
            .known_destinations(&names)
            .known_calls(&known)
            .call_prior(prior);
        let generated: Vec<CallGraph> = requests
            .iter()
            .map(|r| {
                let out = g.graph(r).unwrap();
                let asked = Requested { num_edges: Some(r.num_edges), depth: Some(r.depth), latency: Some(40) };
                assert_eq!(validate::graph(&out.graph, &asked), vec![], "{r:?}\n{}", out.text);
                out.graph
            })
            .collect();
        kl_popular_calls(&real, &generated, 100)
    };
    let (alone, mixed, counts) =
        (kl(CallPrior::NONE), kl(CallPrior { weight: 0.5, sharpness: 4.0 }), kl(CallPrior { weight: 1.0, sharpness: 4.0 }));
    println!(
        "{} requests: KL of popular calls {alone:.3} model alone, {mixed:.3} half counts, {counts:.3} counts alone",
        requests.len()
    );
    assert!(mixed < alone * 0.8, "{mixed} against {alone}");
    assert!(counts < mixed, "{counts} against {mixed}");
}

#[test]
fn a_model_file_carries_its_calls_and_one_written_before_them_still_loads() {
    use gent::llm::calls::Size;
    use gent::llm::model::LanguageModel;
    const VERSION: u16 = 4;
    let graphs: Vec<CallGraph> = train_graphs().into_iter().take(40).map(|(_, g)| g).collect();
    let lm = tiny_language_model(&graphs, 1);
    let known = gent::llm::calls::KnownCalls::of(&graphs);
    assert_eq!(lm.calls.calls(), known.calls());
    let bytes = lm.to_bytes().unwrap();
    let device = gent::nn::cpu_device();
    let back = LanguageModel::from_bytes(&bytes, &device).unwrap();
    assert_eq!(back.calls.calls(), known.calls());
    let (g, size) = (&graphs[0], Size { edges: graphs[0].edges.len() as u64, depth: graphs[0].depth() });
    let prior = back.calls.destination_prior(&g.service, "USER", size, 4.0);
    assert!(!prior.is_empty() && prior == known.destination_prior(&g.service, "USER", size, 4.0), "{prior:?}");
    let shapes = back.calls.subtree_prior(&g.service, "USER", size, 4.0);
    assert!(!shapes.is_empty() && shapes == known.subtree_prior(&g.service, "USER", size, 4.0), "{shapes:?}");
    // The file's tail: the calls with counts, then the node shapes.
    let body = gent::container::open_body_as(&bytes, VERSION).unwrap();
    let counted = postcard::to_allocvec(&known.counted()).unwrap();
    let mut tail = counted.clone();
    tail.extend(postcard::to_allocvec(known.shapes()).unwrap());
    assert!(body.ends_with(&tail));
    let kind = b"gent-llm/5";
    let at = body.windows(kind.len()).position(|w| w == kind).unwrap();
    let model_only = body[..body.len() - tail.len()].to_vec();
    let older = |kind: &[u8], calls: &[u8]| {
        let mut old = model_only.clone();
        old.extend_from_slice(calls);
        old[at..at + kind.len()].copy_from_slice(kind);
        LanguageModel::from_bytes(&gent::container::seal_body_as(&old, VERSION).unwrap(), &device).unwrap()
    };
    // As `gent-llm/4` wrote it: counts, no shapes.
    let v4 = older(b"gent-llm/4", &counted);
    assert_eq!(v4.calls.destination_prior(&g.service, "USER", size, 4.0), prior);
    assert!(v4.calls.subtree_prior(&g.service, "USER", size, 4.0).is_empty(), "no shapes, no prior over them");
    // As `gent-llm/3` wrote it: the calls without counts.
    let v3 = older(b"gent-llm/3", &postcard::to_allocvec(known.calls()).unwrap());
    assert_eq!(v3.calls.calls(), known.calls());
    assert!(v3.calls.destination_prior(&g.service, "USER", size, 4.0).is_empty(), "no counts, no prior");
    // As `gent-llm/2` wrote it: no calls at the end.
    let mut old = model_only;
    old[at..at + kind.len()].copy_from_slice(b"gent-llm/2");
    let old_lm = LanguageModel::from_bytes(&gent::container::seal_body_as(&old, VERSION).unwrap(), &device).unwrap();
    assert!(old_lm.calls.is_empty());
    assert_eq!(old_lm.destinations, lm.destinations);
    // Another kind is refused by name.
    old[at..at + kind.len()].copy_from_slice(b"gent-llm/9");
    let err = LanguageModel::from_bytes(&gent::container::seal_body_as(&old, VERSION).unwrap(), &device).err().unwrap();
    assert!(err.to_string().contains("gent-llm/9"), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn any_request_any_weights_any_seed_gives_a_valid_graph(num_edges in 1u64..=40, depth in 1u64..=8, latency in 0u64..=2000, seed in 0u64..1000) {
        use gent::llm::generate::{Generator, Request, Sampling};
        use rand::SeedableRng;
        proptest::prop_assume!(depth <= num_edges);
        let tok = gent::llm::Tokenizer::train(["edge_id is destination is MS_ type is http rpc mc db mq communication starts at milliseconds"], 1, 100, 4096);
        let mut model = RandomModel { rng: rand::rngs::StdRng::seed_from_u64(seed), vocab: tok.len() };
        let out = Generator::new(&mut model, &tok, Sampling::default(), seed).unwrap()
            .graph(&Request { service: "S_1".into(), num_edges, depth, latency }).unwrap();
        for l in &out.layers {
            proptest::prop_assert_eq!(validate::layer(l), vec![]);
        }
        let asked = Requested { num_edges: Some(num_edges), depth: Some(depth), latency: Some(latency) };
        proptest::prop_assert_eq!(validate::graph(&out.graph, &asked), vec![]);
    }
}

/// The language model as the generator's next-token source.
struct Trained<'a> {
    lm: &'a gent::nn::lm::Lm,
    max_len: usize,
    device: burn::tensor::Device,
}

impl gent::llm::generate::NextToken for Trained<'_> {
    fn logits(&mut self, context: &[u32]) -> Vec<f32> {
        self.lm.next_logits(context, self.max_len, &self.device)
    }
}

/// A tokenizer of the training text and pre-training samples from the first
/// `graphs` training graphs: one layer per sequence, BOS and EOS around it.
fn layer_sequences(graphs: usize, max_len: usize) -> (gent::llm::Tokenizer, Vec<Vec<u32>>) {
    use gent::llm::tokenizer::{BOS, EOS};
    use rand::SeedableRng;
    let train_text = read("alibaba/callgraphs_train.txt");
    let tok = gent::llm::Tokenizer::train([train_text.as_str()], 2, 4096, 4096);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut sequences = Vec::new();
    for (_, g) in train_graphs().iter().take(graphs) {
        for l in text::encode_layers(g, &mut rng, 0.5).0 {
            let doc = text::Document { records: vec![text::Layers(vec![l])], final_newline: true };
            let mut s = vec![BOS];
            s.extend(tok.encode(&text::write_layers(&doc)));
            s.push(EOS);
            s.truncate(max_len);
            sequences.push(s);
        }
    }
    (tok, sequences)
}

#[test]
fn a_tiny_language_model_learns_the_layer_encoding_and_drives_the_generator() {
    use gent::llm::generate::{Generator, Request, Sampling};
    use gent::llm::tokenizer::PAD;
    use gent::nn::lm::{Lm, LmConfig, TrainConfig, train};
    let (tok, sequences) = layer_sequences(60, 256);
    let config = LmConfig { d_model: 32, layers: 1, heads: 2, hidden: 64, max_len: 256, ..LmConfig::tiny(tok.len()) };
    let device = gent::nn::Backend::Cpu.device().unwrap().autodiff();
    let lm = Lm::new(&config, &device).unwrap();
    let (lm, losses) =
        train(lm, &sequences, &TrainConfig { steps: 40, batch: 4, learning_rate: 3e-3, seed: 1 }, PAD, &device).unwrap();
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    println!("{} sequences; loss {first:.3} over the first 5 steps, {last:.3} over the last 5", sequences.len());
    assert!(last < first * 0.8, "loss {first} -> {last}");

    let mut model = Trained { lm: &lm, max_len: config.max_len, device: device.clone() };
    let mut g = Generator::new(&mut model, &tok, Sampling { temperature: 0.8, ..Sampling::default() }, 9).unwrap();
    for (num_edges, depth) in [(1, 1), (4, 2), (7, 3)] {
        let out = g.graph(&Request { service: "S_000034483".into(), num_edges, depth, latency: 20 }).unwrap();
        let asked = Requested { num_edges: Some(num_edges), depth: Some(depth), latency: Some(20) };
        assert_eq!(validate::graph(&out.graph, &asked), vec![], "{}", out.text);
        assert!(out.layers.iter().all(|l| validate::layer(l).is_empty()));
    }
}

#[test]
fn lora_adapters_train_alone_and_merge_into_the_weights() {
    use burn::tensor::{Int, Tensor, TensorData};
    use gent::llm::tokenizer::PAD;
    use gent::nn::lm::{Lm, LmConfig, Lora, LoraConfig, TrainConfig, train_from};
    let (tok, sequences) = layer_sequences(40, 128);
    let config = LmConfig { d_model: 32, layers: 2, heads: 2, hidden: 64, max_len: 128, ..LmConfig::tiny(tok.len()) };
    let device = gent::nn::Backend::Cpu.device().unwrap().autodiff();
    device.seed(3);
    let base = Lm::new(&config, &device).unwrap();
    let probe = Tensor::<2, Int>::from_data(
        TensorData::new(sequences[0][..40].iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, 40]),
        &device,
    );
    let logits = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
    let before = logits(base.forward(probe.clone()));
    let c = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0 };
    let lora = Lora::new(base, &c, &device).unwrap();
    // Query and key adapters of every block: 2 layers × 2 projections × (32×4 + 4×32).
    assert_eq!(lora.trainable(), 2 * 2 * 2 * 32 * 4);
    assert_eq!(logits(lora.forward(probe.clone())), before, "B starts at zero: the adapted model is the base");

    let scored: Vec<(&[u32], usize)> = sequences.iter().map(|s| (s.as_slice(), 0)).collect();
    let (lora, losses) =
        train_from(lora, &scored, &TrainConfig { steps: 60, batch: 4, learning_rate: 3e-2, seed: 1 }, PAD, &device).unwrap();
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
    let (first, last) = (mean(&losses[..8]), mean(&losses[losses.len() - 8..]));
    println!("LoRA rank 4: loss {first:.3} over the first 8 steps, {last:.3} over the last 8");
    // Query and key adapters only steer attention, so on a random base the
    // loss falls slowly (5.71 -> 5.47 here); the frozen vocabulary head bounds it.
    assert!(last < first - 0.1, "loss {first} -> {last}");
    assert_eq!(logits(lora.base().forward(probe.clone())), before, "the base stayed frozen");
    let adapted = logits(lora.forward(probe.clone()));
    let merged = logits(lora.merge().forward(probe));
    let gap = adapted.iter().zip(&merged).map(|(a, m)| (a - m).abs()).fold(0.0f32, f32::max);
    let moved = adapted.iter().zip(&before).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(gap < 1e-3, "merging changed the logits by {gap}");
    assert!(moved > 1e-2, "the adapters learned nothing ({moved})");

    let bad = LoraConfig { rank: 0, ..c };
    assert!(Lora::new(Lm::new(&config, &device).unwrap(), &bad, &device).unwrap_err().to_string().contains("rank"));
}

#[test]
fn the_key_value_cache_gives_the_logits_of_the_whole_context() {
    use gent::nn::lm::{KvCache, Lm, LmConfig};
    let (tok, sequences) = layer_sequences(5, 128);
    let config = LmConfig { d_model: 32, layers: 2, heads: 2, hidden: 64, max_len: 128, ..LmConfig::tiny(tok.len()) };
    let device = gent::nn::Backend::Cpu.device().unwrap();
    device.seed(4);
    let lm = Lm::new(&config, &device).unwrap();
    let (a, b) = (&sequences[0], &sequences[1]);
    // Token by token, several at once, the same context again, back to a
    // shorter prefix, another context, and one past the window (uncached).
    let mut contexts: Vec<&[u32]> = (1..30).map(|n| &a[..n]).collect();
    contexts.extend([&a[..37], &a[..37], &a[..20], &a[..21], &b[..15], &b[..16], &a[..a.len().min(127)]]);
    let mut cache = KvCache::default();
    for (i, c) in contexts.iter().enumerate() {
        let want = lm.next_logits(c, config.max_len, &device);
        let have = lm.next_logits_cached(c, &mut cache, config.max_len, &device);
        let gap = want.iter().zip(&have).map(|(w, h)| (w - h).abs()).fold(0.0f32, f32::max);
        assert!(want.len() == have.len() && gap < 1e-4, "context {i} ({} tokens): logits differ by {gap}", c.len());
    }
}

#[test]
fn bad_model_settings_are_refused() {
    use gent::nn::lm::{Lm, LmConfig};
    let device = gent::nn::Backend::Cpu.device().unwrap();
    for c in [
        LmConfig { heads: 3, ..LmConfig::tiny(100) },
        LmConfig { layers: 0, ..LmConfig::tiny(100) },
        LmConfig { max_len: 1, ..LmConfig::tiny(100) },
    ] {
        assert!(Lm::new(&c, &device).is_err(), "{c:?}");
    }
    assert!(
        gent::nn::lm::train(
            Lm::new(&LmConfig::tiny(10), &device.clone().autodiff()).unwrap(),
            &[vec![1]],
            &gent::nn::lm::TrainConfig { steps: 1, batch: 1, learning_rate: 1e-3, seed: 0 },
            0,
            &device.autodiff()
        )
        .is_err()
    );
}

#[test]
fn gent_llm_trains_writes_a_model_and_generates_valid_call_graphs_as_traces() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lm.gent");
    let out = gent()
        .args(["llm", "train", "--steps", "20", "--batch", "4", "--json", "--out"])
        .arg(&model)
        .arg(data("alibaba/callgraphs_train.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["graphs"], 911);
    assert!(report["last_loss"].as_f64().unwrap() < report["first_loss"].as_f64().unwrap());
    // 5 % of the graphs held back and scored every second step (ten times in 20 steps).
    assert_eq!(report["held_back_graphs"], 46);
    let held = report["held_back_losses"].as_array().unwrap();
    assert_eq!(held.len(), 10, "{held:?}");
    assert_eq!(held[9][0], 20);
    assert!(held[9][1].as_f64().unwrap() < held[0][1].as_f64().unwrap(), "{held:?}");
    assert!(report["identifier_tokens"].as_u64().unwrap() > 200);
    assert!(report["tokens_per_second"].as_f64().unwrap() > 0.0);

    let traces = dir.path().join("g.jsonl");
    let out = gent()
        .args([
            "llm",
            "generate",
            "--constrained",
            "--count",
            "5",
            "--conditions",
            "num_edges:6/depth:3/id:S_000034483/latency:30",
            "--json",
            "--out",
        ])
        .arg(&traces)
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["valid"], 5);
    let set = read_set(std::slice::from_ref(&traces));
    assert_eq!(set.traces.len(), 5);
    assert!(set.traces.iter().all(|t| t.spans.len() == 6));
    assert!(set.traces.iter().flat_map(|t| &t.spans).all(|s| s.resource.attributes.contains(&gent::trace::synthetic_marker())));
    // Batched over requests, or with no cache, the same graphs: every
    // request samples from its own seed.
    for flags in [&["--batch", "3"][..], &["--no-kv-cache"]] {
        let again = dir.path().join("again.jsonl");
        let out = gent()
            .args(["llm", "generate", "--constrained", "--count", "5"])
            .args(["--conditions", "num_edges:6/depth:3/id:S_000034483/latency:30", "--out"])
            .arg(&again)
            .args(flags)
            .arg(&model)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read(&again).unwrap() == std::fs::read(&traces).unwrap(), "{flags:?}");
    }
    // The model carries the training microservices; constrained decoding calls only those.
    let known: std::collections::HashSet<String> =
        train_graphs().into_iter().flat_map(|(_, g)| g.edges.into_iter().map(|e| e.destination)).collect();
    for span in set.traces.iter().flat_map(|t| &t.spans) {
        assert!(known.contains(span.service()), "{} was never called in training", span.service());
    }

    // The prediction task on the frozen model: a head on its features beside
    // the trivial baselines, from graph files.
    let mut doc = text::parse_tabular(&read("alibaba/callgraphs_train.txt")).unwrap();
    let held = doc.records.split_off(150);
    doc.records.truncate(150);
    let (train_file, held_file) = (dir.path().join("train.txt"), dir.path().join("held.txt"));
    std::fs::write(&train_file, text::write_tabular(&doc)).unwrap();
    doc.records = held.into_iter().take(60).collect();
    std::fs::write(&held_file, text::write_tabular(&doc)).unwrap();
    let out = gent()
        .args(["llm", "predict"])
        .arg(&model)
        .args(["--head-steps", "50", "--json", "--train"])
        .arg(&train_file)
        .arg("--real")
        .arg(&held_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let samples = report["held_back_samples"].as_u64().unwrap();
    assert!(samples >= 60, "a sample per prefix of every graph of two edges or more: {report}");
    assert_eq!(report["uncommon"], "graphs", "the paper's definition by default: {report}");
    for key in ["accuracy", "majority_accuracy", "token_count_accuracy", "balanced_accuracy", "token_count_balanced_accuracy"] {
        let v = report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key}: {v}");
    }

    // The infilling tasks: tuned on questions from the training graphs, the
    // model answers those of the held-back ones, beside the most frequent
    // value for the source.
    let infill = |task: &str, out: &std::path::Path| {
        let run = gent()
            .args(["llm", "infill", "--task", task])
            .arg(&model)
            .args(["--questions", "40", "--test-questions", "30", "--steps", "4", "--batch", "4", "--json", "--train"])
            .arg(&train_file)
            .arg("--real")
            .arg(&held_file)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let report: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&run.stdout).lines().last().unwrap()).unwrap();
        let asked = ["train_questions", "held_back_questions", "too_long"].map(|k| report[k].as_u64().unwrap());
        assert_eq!(asked.iter().sum::<u64>(), 70, "every question asked or counted as too long: {report}");
        assert!(asked[0] > 0 && asked[1] > 0, "{report}");
        for side in ["model", "baseline"] {
            for key in ["accuracy", "type_accuracy", "destination_accuracy"] {
                assert!((0.0..=1.0).contains(&report[side][key].as_f64().unwrap()), "{side} {key}: {report}");
            }
        }
        assert!(gent::llm::model::LanguageModel::from_bytes(&std::fs::read(out).unwrap(), &gent::nn::cpu_device()).is_ok());
        report
    };
    let report = infill("attribute", &dir.path().join("infill.gent"));
    assert_eq!((report["train_questions"].as_u64(), report["held_back_questions"].as_u64()), (Some(40), Some(30)));
    // The baseline knows the commonest call type of most sources.
    assert!(report["baseline"]["type_accuracy"].as_f64().unwrap() > 0.5, "{report}");
    assert_eq!(report["paper_accuracy"].as_f64(), Some(0.709));
    let report = infill("edge", &dir.path().join("edge.gent"));
    assert_eq!((report["task"].as_str(), report["paper_accuracy"].as_f64()), (Some("edge"), Some(0.662)));
    assert!(report["baseline"]["type_accuracy"].as_f64().unwrap() > 0.5, "{report}");

    // Bad input: conditions, a file that is not a model.
    let bad = gent()
        .args(["llm", "generate", "--conditions", "depth:3", "--out"])
        .arg(dir.path().join("x"))
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("num_edges"));
    let bad = gent()
        .args(["llm", "generate", "--conditions", "num_edges:2/depth:3", "--out"])
        .arg(dir.path().join("x"))
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = gent()
        .args(["llm", "generate", "--conditions", "num_edges:2/depth:1", "--out"])
        .arg(dir.path().join("x"))
        .arg(data("alibaba/callgraphs_train.txt"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));

    // A Gen-T packet with call-graph conditions regenerates through the language model.
    let mut doc = text::parse_tabular(&read("alibaba/callgraphs_train.txt")).unwrap();
    doc.records.truncate(20);
    let window = dir.path().join("window.txt");
    std::fs::write(&window, text::write_tabular(&doc)).unwrap();
    for (flag, packet) in [(true, "with.gent"), (false, "without.gent")] {
        let mut cmd = gent();
        cmd.args(["train", "--epochs", "1", "--out"]).arg(dir.path().join(packet)).arg(&window);
        if flag {
            cmd.arg("--call-graph-conditions");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let regenerated = dir.path().join("llm.jsonl");
    let out = gent()
        .arg("generate")
        .arg(dir.path().join("with.gent"))
        .arg("--llm")
        .arg(&model)
        .args(["--json", "--out"])
        .arg(&regenerated)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["engine"], "llm");
    assert_eq!(report["traces"], 20);
    let spans: usize = doc.records.iter().map(|r| r.graph().unwrap().edges.len()).sum();
    assert_eq!(report["spans"], spans, "every trace regenerated at its size");
    assert_eq!(read_set(&[regenerated]).traces.len(), 20);
    let bad = gent()
        .arg("generate")
        .arg(dir.path().join("without.gent"))
        .arg("--llm")
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("x.jsonl"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--call-graph-conditions"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn similarity_figures_reward_real_calls_and_punish_others() {
    use gent::llm::eval::{heavy_hitters, kl_popular_calls};
    let real: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).take(300).collect();
    let same = kl_popular_calls(&real, &real, 100);
    assert!(same < 0.01, "{same}");
    assert_eq!(heavy_hitters(&real, &real, 10), 1.0);
    // Calls to microservices the real data never calls.
    let other: Vec<CallGraph> = real
        .iter()
        .map(|g| CallGraph {
            edges: g.edges.iter().map(|e| gent::llm::Edge { destination: "MS_00000".into(), ..e.clone() }).collect(),
            ..g.clone()
        })
        .collect();
    assert!(kl_popular_calls(&real, &other, 100) > 1.0);
    assert_eq!(heavy_hitters(&real, &other, 10), 0.0);
}

#[test]
fn gent_llm_recount_gives_a_model_file_the_counts_of_the_graphs_named_and_keeps_its_network() {
    use gent::llm::model::LanguageModel;
    let dir = tempfile::tempdir().unwrap();
    let few: Vec<(text::Tabular, CallGraph)> = train_graphs().into_iter().take(40).collect();
    let few_file = dir.path().join("few.txt");
    let records = few.iter().map(|(r, _)| r.clone()).collect();
    std::fs::write(&few_file, text::write_tabular(&text::Document { records, final_newline: true })).unwrap();
    let (model, recounted) = (dir.path().join("m.gent"), dir.path().join("r.gent"));
    let out = gent()
        .args(["llm", "train", "--steps", "3", "--batch", "2", "--out"])
        .arg(&model)
        .arg(data("alibaba/callgraphs_train.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        gent().args(["llm", "recount"]).arg(&model).arg("--train").arg(&few_file).arg("--out").arg(&recounted).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let load = |p: &std::path::Path| LanguageModel::from_bytes(&std::fs::read(p).unwrap(), &gent::nn::cpu_device()).unwrap();
    let (before, after) = (load(&model), load(&recounted));
    let graphs: Vec<CallGraph> = few.into_iter().map(|(_, g)| g).collect();
    let known = gent::llm::calls::KnownCalls::of(&graphs);
    assert_eq!(after.calls.counted(), known.counted());
    assert_eq!(after.calls.shapes(), known.shapes());
    assert!(
        after.calls.calls().len() < before.calls.calls().len(),
        "the calls of the 40 graphs named, not of the model's training"
    );
    // The network is the same: the model alone writes the same graphs.
    let generated = |m: &std::path::Path, name: &str| {
        let out_file = dir.path().join(name);
        let run = gent()
            .args(["llm", "generate", "--constrained", "--any-call", "--count", "2", "--conditions", "num_edges:6/depth:3"])
            .args(["--format", "alibaba", "--out"])
            .arg(&out_file)
            .arg(m)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        std::fs::read_to_string(out_file).unwrap()
    };
    assert_eq!(generated(&model, "a.txt"), generated(&recounted, "b.txt"));
    // Not a model file: refused, naming it.
    let out = gent()
        .args(["llm", "recount"])
        .arg(&few_file)
        .arg("--train")
        .arg(&few_file)
        .arg("--out")
        .arg(&recounted)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("few.txt"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn gent_llm_splits_then_evaluates_every_method_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (train, held) = (dir.path().join("train.txt"), dir.path().join("held.txt"));
    let out = gent()
        .args(["llm", "split", "--fraction", "0.1", "--seed", "3", "--train"])
        .arg(&train)
        .arg("--held-back")
        .arg(&held)
        .arg(data("alibaba/callgraphs_train.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = text::parse_tabular(&std::fs::read_to_string(&train).unwrap()).unwrap().records;
    let back = text::parse_tabular(&std::fs::read_to_string(&held).unwrap()).unwrap().records;
    assert_eq!((kept.len(), back.len()), (820, 91));
    assert!(back.iter().all(|r| !kept.contains(r)), "held-back graphs are not in the training file");

    let (layers, tabular) = (dir.path().join("layers.gent"), dir.path().join("tabular.gent"));
    for (model, encoding) in [(&layers, "layers"), (&tabular, "tabular")] {
        let out = gent()
            .args(["llm", "train", "--steps", "5", "--batch", "2", "--encoding", encoding, "--out"])
            .arg(model)
            .arg(&train)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The same seed trains the same model, weights included.
    let again = dir.path().join("again.gent");
    let out = gent().args(["llm", "train", "--steps", "5", "--batch", "2", "--out"]).arg(&again).arg(&train).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // (The files differ in burn's random parameter ids; what they generate does not.)
    let generated = |model: &std::path::Path, out: &std::path::Path| {
        let run = gent()
            .args([
                "llm",
                "generate",
                "--constrained",
                "--count",
                "3",
                "--conditions",
                "num_edges:5/depth:2",
                "--format",
                "alibaba",
                "--out",
            ])
            .arg(out)
            .arg(model)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let first = generated(&layers, &dir.path().join("a.txt"));
    assert!(first == generated(&again, &dir.path().join("b.txt")), "seeded training is not reproducible");
    let eval = |extra: &[&std::ffi::OsStr]| {
        gent()
            .args(["llm", "eval", "--count", "1", "--max-edges", "4", "--max-depth", "2", "--similarity-graphs", "10", "--json"])
            .arg("--real")
            .arg(&held)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = eval(&[
        "--rounds".as_ref(),
        "2".as_ref(),
        "--constrained".as_ref(),
        "--tabular".as_ref(),
        tabular.as_os_str(),
        "--probabilistic".as_ref(),
        data("probabilistic").as_os_str(),
        "--train".as_ref(),
        train.as_os_str(),
        "--".as_ref(),
        layers.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let methods = r["methods"].as_array().unwrap();
    let decodings: Vec<&str> = methods.iter().map(|m| m["decoding"].as_str().unwrap()).collect();
    // With training graphs the retrieval baseline is a row too, and every
    // other row is judged against it.
    assert_eq!(decodings, ["constrained, call prior 1", "tabular", "probabilistic", "retrieval"]);
    // Two rounds: two graphs per held-back request from every method that
    // always gives one.
    assert_eq!((r["similarity_requests"].as_u64(), r["rounds"].as_u64()), (Some(10), Some(2)));
    let floor = methods[3]["kl_popular_calls"].as_f64().unwrap();
    assert_eq!(methods[3]["similarity_generated"], 20);
    assert!(methods[3].get("kl_over_retrieval").is_none());
    for m in &methods[..3] {
        let over = m["kl_over_retrieval"].as_f64().unwrap();
        assert!((over - (m["kl_popular_calls"].as_f64().unwrap() - floor)).abs() < 1e-9, "{m}");
    }
    // Constrained decoding: every cell valid whatever the (barely trained) weights.
    assert_eq!(methods[0]["accuracy_mean"], 1.0);
    assert_eq!(methods[0]["accuracy_min_cell"], 1.0);
    assert_eq!(methods[0]["cells"].as_array().unwrap().len(), 7);
    assert_eq!(methods[0]["similarity_generated"], 20);
    assert!(methods[0].get("rejected").is_none(), "{}", methods[0]);
    assert_eq!(methods[0]["accuracy_held_back"], 1.0);
    // The tabular model's share of held-back requests it met is the graphs
    // it gave out of the 20 asked; the baselines take no request to meet.
    let met = methods[1]["similarity_generated"].as_f64().unwrap() / 20.0;
    assert!((methods[1]["accuracy_held_back"].as_f64().unwrap() - met).abs() < 1e-12, "{}", methods[1]);
    assert!(methods[2].get("accuracy_held_back").is_none() && methods[3].get("accuracy_held_back").is_none());
    // By band of requested edges: every request counted once per round, in
    // its band, and the bands' met add up to the graphs given.
    for m in &methods[..2] {
        let bands = m["held_back_by_size"].as_array().unwrap();
        let sum = |k: &str| bands.iter().map(|b| b[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!((sum("asked"), sum("met")), (20, m["similarity_generated"].as_u64().unwrap()), "{m}");
        assert!(bands.iter().all(|b| ["1", "2-4", "5-10", "11+"].contains(&b["edges"].as_str().unwrap())), "{m}");
    }
    let tab = methods[1]["accuracy_mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&tab));
    // Every grid graph the tabular model got wrong is counted under the rule
    // that rejected it.
    let cells = methods[1]["cells"].as_array().unwrap();
    let failed: u64 = cells.iter().map(|c| c["tried"].as_u64().unwrap() - c["valid"].as_u64().unwrap()).sum();
    let rejected = methods[1].get("rejected").and_then(|r| r.as_object());
    let tallied: u64 = rejected.map_or(0, |r| r.values().map(|n| n.as_u64().unwrap()).sum());
    assert_eq!(tallied, failed, "{}", methods[1]);
    assert!(rejected.into_iter().flatten().all(|(rule, _)| !rule.is_empty() && !rule.contains(' ')), "{}", methods[1]);
    // The probabilistic baseline has no grid accuracy (it takes no request) but always a graph.
    assert!(methods[2]["accuracy_mean"].is_null());
    assert_eq!(methods[2]["similarity_generated"], 20);
    for m in methods {
        assert!(m["kl_popular_calls"].as_f64().unwrap() >= 0.0, "{m}");
        assert!((0.0..=1.0).contains(&m["heavy_hitter_top10"].as_f64().unwrap()), "{m}");
    }

    // Bad use: nothing to evaluate; a tabular model where a layer model belongs;
    // the probabilistic baseline without training graphs to name its nodes.
    let out = eval(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = eval(&["--".as_ref(), tabular.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("encoding"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = eval(&["--probabilistic".as_ref(), data("probabilistic").as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // A tabular model generates freely, and refuses constrained decoding clearly.
    let traces = dir.path().join("t.jsonl");
    let out = gent()
        .args(["llm", "generate", "--count", "2", "--conditions", "num_edges:2/depth:2", "--json", "--out"])
        .arg(&traces)
        .arg(&tabular)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gent()
        .args(["llm", "generate", "--constrained", "--conditions", "num_edges:2/depth:2", "--out"])
        .arg(&traces)
        .arg(&tabular)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("layer encoding"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_probabilistic_baseline_follows_its_fitted_parameters() {
    use gent::llm::baseline::Probabilistic;
    use rand::SeedableRng;
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).collect();
    let p = Probabilistic::load(&data("probabilistic"), &graphs).unwrap();
    let names: std::collections::HashSet<&str> =
        graphs.iter().flat_map(|g| g.edges.iter().map(|e| e.destination.as_str())).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let n = 4000;
    let (mut calling_roots, mut first_fan_out) = (0, Vec::new());
    for _ in 0..n {
        let g = p.graph("S_1", &mut rng);
        assert!(g.edges.len() <= p.max_edges);
        assert_eq!((g.edges[0].id.as_slice(), g.edges[0].source.as_str(), g.edges[0].kind.as_str()), (&[0][..], "USER", "http"));
        // A well-formed tree: every call's source is its parent's destination,
        // children numbered 1, 2, ... under their parent, names from the training graphs.
        let by_id: std::collections::HashMap<&[u32], &gent::llm::Edge> = g.edges.iter().map(|e| (e.id.as_slice(), e)).collect();
        for e in &g.edges[1..] {
            let parent = by_id[&e.id[..e.id.len() - 1]];
            assert_eq!(e.source, parent.destination);
            assert!(["rpc", "mq", "db", "mc", "http"].contains(&e.kind.as_str()), "{}", e.kind);
            let last = *e.id.last().unwrap();
            assert!(last == 1 || by_id.contains_key(&[&e.id[..e.id.len() - 1], &[last - 1]].concat()[..]));
        }
        assert!(g.edges.iter().all(|e| names.contains(e.destination.as_str())));
        let children = g.edges.iter().filter(|e| e.id.len() == 2).count();
        if children > 0 {
            calling_roots += 1;
            first_fan_out.push(children as f64);
        }
    }
    // Erms: the root calls on with probability (1 - leaf(0)) × medium(0) =
    // (1 - 0.02853) × 0.92432 = 0.8979, then makes 1 + num calls, num drawn from
    // depth 1's distribution (1: 22.2%, 2: 47.9%, 3: 17.7%, ...).
    let share = calling_roots as f64 / n as f64;
    assert!((share - 0.8979).abs() < 0.03, "share of roots that call on: {share:.3}");
    let two = first_fan_out.iter().filter(|&&c| c == 2.0).count() as f64 / first_fan_out.len() as f64;
    let three = first_fan_out.iter().filter(|&&c| c == 3.0).count() as f64 / first_fan_out.len() as f64;
    assert!((two - 0.2224).abs() < 0.03 && (three - 0.4788).abs() < 0.03, "fan-out 2: {two:.3}, 3: {three:.3}");

    // Missing or damaged parameters are refused with the file named.
    let dir = tempfile::tempdir().unwrap();
    let e = Probabilistic::load(dir.path(), &graphs).unwrap_err().to_string();
    assert!(e.contains("depthDistribution"), "{e}");
    for f in ["communicationParadigm", "leafDistribution", "nodeDistribution"] {
        std::fs::copy(data(&format!("probabilistic/{f}.csv.gz")), dir.path().join(format!("{f}.csv.gz"))).unwrap();
    }
    std::fs::write(dir.path().join("depthDistribution.csv"), ",depth,num,percentage,cumsum\n0,1,two,0.5,0.5\n").unwrap();
    let e = Probabilistic::load(dir.path(), &graphs).unwrap_err().to_string();
    assert!(e.contains("depthDistribution.csv line 2") && e.contains("num"), "{e}");
    assert!(Probabilistic::load(&data("probabilistic"), &[]).is_err(), "no names to draw from");
}

#[test]
fn a_hold_out_split_is_seeded_disjoint_and_complete() {
    use gent::llm::eval::hold_out;
    let (a, b) = hold_out((0..911).collect::<Vec<_>>(), 0.1, 7);
    assert_eq!((a.len(), b.len()), (820, 91));
    let mut all: Vec<i32> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(all, (0..911).collect::<Vec<_>>());
    assert_eq!(hold_out((0..911).collect::<Vec<_>>(), 0.1, 7).1, b, "same seed, same split");
    assert_ne!(hold_out((0..911).collect::<Vec<_>>(), 0.1, 8).1, b);
}

/// Body lines as comparable text: subgraph conditions and each block of
/// subgraph constraints (shuffled by the encoder) put in order.
fn normalised(body: &[text::BodyLine]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut block: Vec<String> = Vec::new();
    let mut in_block = false;
    for b in body {
        match b {
            text::BodyLine::Text(t) if t == "Subgraph constraints:" => {
                out.push(t.clone());
                in_block = true;
            }
            text::BodyLine::Text(t) if in_block => block.push(t.clone()),
            text::BodyLine::Text(t) => out.push(t.clone()),
            text::BodyLine::Subgraph { edge, conditions } => {
                block.sort();
                out.append(&mut block);
                in_block = false;
                let mut pairs = conditions.0.clone();
                pairs.sort();
                out.push(format!("subgraph {edge} {pairs:?}"));
            }
        }
    }
    out
}

#[test]
fn instruction_samples_reason_as_the_papers_examples_do() {
    use gent::llm::instruct::{self, UserInstruction};
    use rand::SeedableRng;
    let doc = text::parse_instructions(&read("alibaba/recursive_instruction_example.txt")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (mut includes, mut builds) = (0, 0);
    for (i, r) in doc.records.iter().enumerate() {
        let layer = r.answer.layer().unwrap();
        // The reasoning lines are exactly the dataset's.
        let (body, inline) = instruct::reasoning(&layer, &mut rng);
        assert_eq!(inline, r.answer.close_inline, "record {i}");
        assert_eq!(normalised(&body), normalised(&r.answer.body), "record {i}");
        // Every prompt line is a template constraint of the stated requirements, or a user instruction.
        let allowed = instruct::constraint_lines(&r.requirements.layer(0).unwrap());
        for p in &r.prompt {
            match UserInstruction::parse(p) {
                Some(u @ UserInstruction::IncludeEdge { .. }) => {
                    assert!(u.included_in(&layer.edges), "record {i}: the layer lacks {p:?}");
                    includes += 1;
                }
                Some(_) => builds += 1,
                None => assert!(allowed.contains(p), "record {i}: {p:?} is not a template line"),
            }
        }
    }
    assert_eq!((doc.records.len(), includes, builds), (24, 8, 2));
    assert_eq!(UserInstruction::parse("Include an edge from A to B with rpc"), None);

    // Samples made from training graphs read back to themselves and to their layers.
    let sampling = instruct::Sampling { p_drop: 0.0, p_drop_line: 0.0 };
    let mut samples = 0;
    for (_, g) in train_graphs().iter().take(150) {
        for (j, l) in g.layers().iter().enumerate() {
            let user = l.edges.first().map(|e| UserInstruction::IncludeEdge {
                source: e.source.clone(),
                destination: e.destination.clone(),
                kind: e.kind.clone(),
            });
            let sample = instruct::encode(l, j == 0, user.as_ref(), sampling, &mut rng);
            assert!(sample.prompt.contains(&user.as_ref().unwrap().line()));
            let written = text::write_instructions(&text::Document { records: vec![sample.clone()], final_newline: true });
            let mut back = text::parse_instructions(&written).unwrap().records;
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].answer.layer().unwrap(), *l, "{written}");
            back[0].answer.line = 0;
            assert_eq!(back[0], sample, "{written}");
            samples += 1;
        }
    }
    assert!(samples > 250, "{samples}");
}

#[test]
fn a_prompt_is_read_but_not_scored() {
    use burn::tensor::{Int, Tensor, TensorData, activation::log_softmax};
    use gent::nn::lm::{Lm, LmConfig};
    let device = gent::nn::Backend::Cpu.device().unwrap();
    let lm = Lm::new(&LmConfig { layers: 1, ..LmConfig::tiny(20) }, &device).unwrap();
    let s: Vec<u32> = vec![1, 7, 9, 4, 12, 3, 5, 2];
    let from = 5;
    let scored = lm.loss_from(&[(&s, from)], 0, &device).into_data().try_to_vec::<f32>().unwrap()[0];
    // By hand: the mean of -log p(s[i+1]) over the positions whose target is at or after `from`.
    let input: Vec<i64> = s[..s.len() - 1].iter().map(|&t| i64::from(t)).collect();
    let n = input.len();
    let logp = log_softmax(lm.forward(Tensor::<2, Int>::from_data(TensorData::new(input, [1, n]), &device)), 2);
    let logp = logp.into_data().try_to_vec::<f32>().unwrap();
    let terms: Vec<f32> = (from - 1..n).map(|i| -logp[i * 20 + s[i + 1] as usize]).collect();
    let by_hand = terms.iter().sum::<f32>() / terms.len() as f32;
    assert!((scored - by_hand).abs() < 1e-4, "{scored} vs {by_hand}");
    let all = lm.loss(&[s.clone()], 0, &device).into_data().try_to_vec::<f32>().unwrap()[0];
    assert!((all - scored).abs() > 1e-6, "the prompt changed nothing");
    // A sequence that is all prompt has nothing to learn from.
    let c = gent::nn::lm::TrainConfig { steps: 1, batch: 1, learning_rate: 1e-3, seed: 0 };
    let train = Lm::new(&LmConfig { layers: 1, ..LmConfig::tiny(20) }, &device.clone().autodiff()).unwrap();
    assert!(gent::nn::lm::train_from(train, &[(&s, s.len())], &c, 0, &device.autodiff()).is_err());
}

#[test]
fn the_prediction_task_has_both_classes_to_learn_from_with_the_papers_definition() {
    use gent::llm::instruct::Facts;
    use gent::llm::predict::{Rarity, samples};
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).collect();
    let facts = Facts::of(&graphs);
    let share = |rarity| {
        let s = samples(&graphs, &facts, rarity);
        assert!(s.len() > 2000, "{}", s.len());
        s.iter().filter(|s| s.uncommon_follows).count() as f64 / s.len() as f64
    };
    // A call in under 10 % of the graphs: both classes well represented.
    let graphs_share = share(Rarity::Graphs);
    assert!((0.1..=0.9).contains(&graphs_share), "{graphs_share}");
    // Under 10 % of its source's graphs: almost never, nothing to learn from.
    let source_share = share(Rarity::Source);
    assert!(source_share < 0.02, "{source_share}");
}

#[test]
fn user_instructions_follow_the_training_graphs() {
    use gent::llm::instruct::{Facts, UserInstruction};
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).collect();
    let facts = Facts::of(&graphs);
    // The p90 splits each well-represented service's graphs about 90/10.
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for g in &graphs {
        *counts.entry(g.service.as_str()).or_default() += 1;
    }
    let service = counts.iter().max_by_key(|(s, n)| (**n, std::cmp::Reverse(**s))).map(|(s, _)| *s).unwrap();
    let mine: Vec<&CallGraph> = graphs.iter().filter(|g| g.service == service).collect();
    assert!(mine.len() >= 20, "{}", mine.len());
    let high = mine.iter().filter(|g| facts.high_latency(service, g.latency())).count();
    assert!(high * 100 <= mine.len() * 10, "{high} of {}", mine.len());
    assert!(!facts.high_latency("S_never_seen", u64::MAX));
    // Uncommon calls exist and are rarer than the common ones.
    let edges: Vec<&gent::llm::Edge> = graphs.iter().flat_map(|g| &g.edges).collect();
    let uncommon = edges.iter().filter(|e| facts.uncommon(e)).count();
    assert!(uncommon > 0 && uncommon * 2 < edges.len(), "{uncommon} of {}", edges.len());
    // Every first layer carries a latency instruction; other layers an edge one only for an uncommon call.
    for g in graphs.iter().take(200) {
        for (j, l) in g.layers().iter().enumerate() {
            match facts.instruction(g, j, l) {
                Some(UserInstruction::HighLatency | UserInstruction::Distributions) => assert_eq!(j, 0),
                Some(u @ UserInstruction::IncludeEdge { .. }) => {
                    assert!(j > 0 && u.included_in(&l.edges));
                    assert!(l.edges.iter().any(|e| facts.uncommon(e)));
                }
                None => assert!(j > 0 && !l.edges.iter().any(|e| facts.uncommon(e))),
            }
        }
    }
}

#[test]
fn gent_llm_tunes_on_instructions_and_reports_instruction_following() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tuned.gent");
    let out = gent()
        .args(["llm", "train", "--steps", "5", "--batch", "2", "--tune-steps", "8", "--tune-fraction", "0.02", "--json", "--out"])
        .arg(&model)
        .arg(data("alibaba/callgraphs_train.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(r["tune_steps"], 8);
    assert!(r["tune_last_loss"].as_f64().unwrap() < r["tune_first_loss"].as_f64().unwrap(), "{r}");

    let train = data("alibaba/callgraphs_train.txt");
    let eval_instructed = |model: &std::path::Path, limits: &[&str]| {
        gent()
            .args(["llm", "eval", "--count", "1", "--max-depth", "1"])
            .args(limits)
            .arg("--instructed")
            .arg(model)
            .arg("--train")
            .arg(&train)
            .arg("--real")
            .arg(&train)
            .output()
            .unwrap()
    };
    let out = eval_instructed(&model, &["--max-edges", "2", "--similarity-graphs", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let m = &r["methods"][0];
    assert_eq!(m["decoding"], "instructed");
    assert_eq!(m["high_latency"]["tried"], 2);
    for k in ["high_latency", "uncommon_communication"] {
        for v in ["with_instruction", "without_instruction"] {
            assert!((0.0..=1.0).contains(&m[k][v].as_f64().unwrap()), "{m}");
        }
    }
    // The tuned model generates in the instruction encoding; constrained decoding still works.
    // With a user instruction too.
    for extra in [&[][..], &["--constrained"][..], &["--high-latency"][..], &["--include-edge", "MS_57649,MS_03426,rpc"][..]] {
        let out = gent()
            .args(["llm", "generate", "--count", "2", "--conditions", "num_edges:3/depth:2", "--json", "--out"])
            .arg(dir.path().join("g.jsonl"))
            .args(extra)
            .arg(&model)
            .output()
            .unwrap();
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Instructions are for free decoding, and take three parts.
    for (extra, says) in [
        (&["--high-latency", "--constrained"][..], "--constrained"),
        (&["--include-edge", "MS_57649,rpc"][..], "SOURCE,DESTINATION,TYPE"),
    ] {
        let out = gent()
            .args(["llm", "generate", "--conditions", "num_edges:3/depth:2", "--out"])
            .arg(dir.path().join("g.jsonl"))
            .args(extra)
            .arg(&model)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // Bad use: tuning a tabular model; --instructed with a model never tuned.
    let out = gent()
        .args(["llm", "train", "--steps", "1", "--encoding", "tabular", "--tune-steps", "1", "--out"])
        .arg(dir.path().join("x.gent"))
        .arg(&train)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let plain = dir.path().join("plain.gent");
    let out = gent().args(["llm", "train", "--steps", "1", "--out"]).arg(&plain).arg(&train).output().unwrap();
    assert!(out.status.success());
    let out = eval_instructed(&plain, &["--max-edges", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not instruction-tuned"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_retrieval_baseline_copies_real_graphs_and_beats_the_probabilistic_one_on_held_back_calls() {
    use gent::llm::baseline::Probabilistic;
    use gent::llm::eval::{hold_out, kl_popular_calls};
    use gent::llm::retrieval::Retrieval;
    use rand::SeedableRng;
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).collect();
    let (training, held) = hold_out(graphs, 0.1, 0);
    let r = Retrieval::new(&training).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let copied: Vec<CallGraph> = held.iter().map(|h| r.graph(&h.service, h.edges.len() as u64, h.depth(), &mut rng)).collect();
    for (h, c) in held.iter().zip(&copied) {
        assert_eq!(c.service, h.service);
        // Its calls are a training graph's, of the same service when there is one.
        let same_service: Vec<&CallGraph> = training.iter().filter(|t| t.service == h.service).collect();
        let pool: Vec<&CallGraph> = if same_service.is_empty() { training.iter().collect() } else { same_service };
        let source = pool.iter().find(|t| t.edges == c.edges).expect("a copy of a training graph");
        // And none in that pool is nearer the requested size.
        let d = |g: &CallGraph| ((g.edges.len() as u64).abs_diff(h.edges.len() as u64), g.depth().abs_diff(h.depth()));
        assert!(pool.iter().all(|t| d(t) >= d(source)), "{}: a nearer graph was passed over", h.service);
    }
    let p = Probabilistic::load(&data("probabilistic"), &training).unwrap();
    let drawn: Vec<CallGraph> = held.iter().map(|h| p.graph(&h.service, &mut rng)).collect();
    let (retrieval, probabilistic) = (kl_popular_calls(&held, &copied, 100), kl_popular_calls(&held, &drawn, 100));
    println!(
        "KL of popular calls on {} held-back graphs: retrieval {retrieval:.3}, probabilistic {probabilistic:.3}",
        held.len()
    );
    assert!(retrieval < 0.6 && retrieval < probabilistic / 3.0, "retrieval {retrieval:.3}, probabilistic {probabilistic:.3}");
}

/// The committed Llama fixture (made by `scripts/llama-reference` with
/// Hugging Face transformers): config, weights, tokenizer, and the reference
/// token ids and logits of three prompts.
fn llama_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-tiny")
}

#[derive(serde::Deserialize)]
struct LlamaExpected {
    prompts: Vec<String>,
    ids: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
}

/// The checkpoint in `dir` gives the token ids and logits of `dir`'s
/// `expected.json`, and its cached greedy generation agrees with them.
fn assert_reference_logits(model: &gent::llm::pretrained::Pretrained, dir: &std::path::Path) {
    let expected: LlamaExpected = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let mut worst = 0f32;
    for ((prompt, ids), logits) in expected.prompts.iter().zip(&expected.ids).zip(&expected.logits) {
        assert_eq!(&model.encode(prompt).unwrap(), ids, "{prompt:?}: token ids");
        let ours = model.logits(ids);
        assert_eq!(ours.len(), logits.len(), "{prompt:?}");
        let diff = ours.iter().zip(logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        worst = worst.max(diff);
        assert!(diff < 1e-4, "{prompt:?}: logits differ by up to {diff}");
        // Greedy generation through the key/value cache (grouped keys and
        // values) starts with the reference's likeliest next token.
        let vocab = model.checkpoint.config.vocab;
        let last = &logits[logits.len() - vocab..];
        let best = (0..vocab).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
        let generated = model.greedy(ids, 4);
        assert_eq!(generated[0], best, "{prompt:?}");
        // Each cached step equals a full forward pass over the longer context.
        let mut longer = ids.clone();
        longer.extend(&generated[..3]);
        let full = model.logits(&longer);
        let after = &full[full.len() - vocab..];
        let next = (0..vocab).max_by(|&a, &b| after[a].total_cmp(&after[b])).unwrap() as u32;
        assert_eq!(generated[3], next, "{prompt:?}: cached and full passes agree");
    }
    eprintln!("{}: largest logit difference from transformers: {worst:e}", dir.display());
}

#[test]
fn a_llama_checkpoint_gives_the_reference_implementations_tokens_and_logits() {
    use gent::llm::pretrained::Pretrained;
    let dir = llama_fixture();
    let model = Pretrained::load(&dir, &gent::nn::cpu_device()).unwrap();
    // Grouped-query attention, a rotary base and epsilon of its own: every
    // mapping the loader makes is exercised.
    assert_eq!((model.checkpoint.config.heads, model.checkpoint.variant.kv_heads), (4, 2));
    assert_eq!(model.checkpoint.variant.rope_theta, 500_000.0);
    assert_eq!(model.checkpoint.variant.rope_scaling, gent::nn::lm::RopeScaling::None);
    assert!(!model.checkpoint.tied);
    assert_reference_logits(&model, &dir);
}

#[test]
fn a_llama_3_checkpoint_scales_its_rotary_frequencies_as_the_reference_does() {
    use gent::llm::pretrained::Pretrained;
    use gent::nn::lm::RopeScaling;
    // The fixture's weights and tokenizer under a Llama 3.1 config (rotary
    // scaling by 8 from a pre-training context of 256, so the head width
    // of 8 has a frequency kept, one blended and two slowed), with
    // transformers' logits for that config: the unscaled logits differ from
    // these by up to 2.6.
    let scaled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-tiny-llama3");
    let dir = broken_llama(|d| {
        for f in ["config.json", "expected.json"] {
            std::fs::copy(scaled.join(f), d.join(f)).unwrap();
        }
    });
    let model = Pretrained::load(dir.path(), &gent::nn::cpu_device()).unwrap();
    assert_eq!(
        model.checkpoint.variant.rope_scaling,
        RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 256.0 }
    );
    assert_eq!(model.checkpoint.config.max_len, 1024);
    assert_reference_logits(&model, dir.path());
}

#[test]
fn a_mistral_checkpoint_loads_with_its_context_cut_to_its_attention_window() {
    use gent::llm::pretrained::Pretrained;
    // Mistral is Llama attending to its last `sliding_window` positions:
    // `scripts/llama-reference` checks that transformers' Mistral gives
    // llama-tiny's logits for llama-tiny's weights under this config.
    let dir = broken_llama(|d| {
        std::fs::copy(llama_fixture().join("expected.json"), d.join("expected.json")).unwrap();
        edit_config(d, |v| {
            v["model_type"] = "mistral".into();
            v["architectures"] = serde_json::json!(["MistralForCausalLM"]);
            v["sliding_window"] = 64.into();
        })
    });
    let model = Pretrained::load(dir.path(), &gent::nn::cpu_device()).unwrap();
    assert_eq!(model.checkpoint.config.max_len, 64, "the context is cut to the window");
    assert_reference_logits(&model, dir.path());
    // Without a window, the whole context.
    edit_config(dir.path(), |v| v["sliding_window"] = serde_json::Value::Null);
    assert_eq!(Pretrained::load(dir.path(), &gent::nn::cpu_device()).unwrap().checkpoint.config.max_len, 256);
}

#[test]
fn a_qwen2_checkpoint_gives_the_reference_logits_with_its_projection_biases() {
    use gent::llm::finetuned::{FineTuning, Finetuned};
    use gent::llm::pretrained::Pretrained;
    // Made by `scripts/llama-reference` (Qwen2ForCausalLM: llama-tiny's sizes
    // and tokenizer, biases on the query, key and value projections drawn
    // like the weights).
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2-tiny");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "expected.json"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(llama_fixture().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let device = gent::nn::cpu_device();
    let model = Pretrained::load(dir.path(), &device).unwrap();
    assert!(model.checkpoint.variant.qkv_bias);
    assert_reference_logits(&model, dir.path());
    // The biases are part of the network a fine-tune stores and reads back.
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).take(20).collect();
    let train = gent::nn::lm::TrainConfig { steps: 2, batch: 4, learning_rate: 3e-3, seed: 1 };
    let t = FineTuning { train, p_drop: 0.5, held_back: 0.0, lora: None };
    let (tuned, _) = Finetuned::train(model, &graphs, &t, &device).unwrap();
    let bytes = tuned.to_bytes().unwrap();
    let again = Finetuned::from_bytes(&bytes, &device, None).unwrap();
    assert!(again.variant.qkv_bias);
    assert_eq!(again.to_bytes().unwrap(), bytes);
    // A missing bias is named.
    let path = dir.path().join("model.safetensors");
    let raw = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != "model.layers.1.self_attn.k_proj.bias").collect();
    safetensors::serialize_to_file(kept, None, &path).unwrap();
    let e = Pretrained::load(dir.path(), &device).err().unwrap().to_string();
    assert!(e.contains("model.layers.1.self_attn.k_proj.bias") && e.contains("missing"), "{e}");
}

#[test]
fn rotary_scaling_is_read_from_either_config_format() {
    use gent::llm::pretrained::Pretrained;
    use gent::nn::lm::RopeScaling;
    let device = gent::nn::cpu_device();
    let scaling = |dir: &tempfile::TempDir| Pretrained::load(dir.path(), &device).unwrap().checkpoint.variant;
    // Before transformers 5: the base beside `rope_scaling`, its type as `type`.
    let old = broken_llama(|d| {
        edit_config(d, |v| {
            v.as_object_mut().unwrap().remove("rope_parameters");
            v["rope_theta"] = 250_000.0.into();
            v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 4.0});
        })
    });
    let v = scaling(&old);
    assert_eq!((v.rope_theta, v.rope_scaling), (250_000.0, RopeScaling::Linear { factor: 4.0 }));
    // As SmolLM2 and TinyLlama write it: no scaling, as `null`.
    let none = broken_llama(|d| {
        edit_config(d, |v| {
            v.as_object_mut().unwrap().remove("rope_parameters");
            v["rope_theta"] = 100_000.0.into();
            v["rope_scaling"] = serde_json::Value::Null;
        })
    });
    let v = scaling(&none);
    assert_eq!((v.rope_theta, v.rope_scaling), (100_000.0, RopeScaling::None));
    // `original_max_position_embeddings` outside the rotary parameters wins,
    // and the model's own context stands in when there is none.
    let llama3 = |outside: Option<u32>| {
        broken_llama(|d| {
            edit_config(d, |v| {
                v["rope_parameters"] = serde_json::json!({
                    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0});
                if let Some(n) = outside {
                    v["original_max_position_embeddings"] = n.into();
                }
            })
        })
    };
    let context = |v: gent::nn::lm::Variant| match v.rope_scaling {
        RopeScaling::Llama3 { original_context, .. } => original_context,
        other => panic!("{other:?}"),
    };
    assert_eq!(context(scaling(&llama3(Some(128)))), 128.0);
    assert_eq!(context(scaling(&llama3(None))), 256.0);
}
/// A copy of the fixture in a temporary directory, changed by `change`.
fn broken_llama(change: impl FnOnce(&std::path::Path)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(llama_fixture().join(f), tmp.path().join(f)).unwrap();
    }
    change(tmp.path());
    tmp
}

fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn a_checkpoint_that_does_not_fit_is_refused_naming_the_tensor_or_field() {
    use gent::llm::pretrained::Pretrained;
    let device = gent::nn::cpu_device();
    let refused = |dir: &tempfile::TempDir| match Pretrained::load(dir.path(), &device) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    // A tensor left out of the weights.
    let gone = "model.layers.1.mlp.up_proj.weight";
    let dir = broken_llama(|d| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != gone).collect();
        safetensors::serialize_to_file(kept, None, &d.join("model.safetensors")).unwrap();
    });
    let e = refused(&dir);
    assert!(e.contains(gone) && e.contains("missing"), "{e}");
    // A config whose sizes the weights do not have.
    let e = refused(&broken_llama(|d| edit_config(d, |v| v["intermediate_size"] = 80.into())));
    assert!(e.contains("model.layers.0.mlp.gate_proj.weight") && e.contains("[64, 32]"), "{e}");
    // Sizes no weights could hold are refused before anything is listed or built.
    let e = refused(&broken_llama(|d| edit_config(d, |v| v["num_hidden_layers"] = 1_000_000_000_000u64.into())));
    assert!(e.contains("config.json") && e.contains("bytes of weights hold"), "{e}");
    let e = refused(&broken_llama(|d| edit_config(d, |v| v["num_key_value_heads"] = 3.into())));
    assert!(e.contains("4 heads") && e.contains("3 key/value heads"), "{e}");
    // Another architecture, or a rotary scaling this loader does not apply.
    let e = refused(&broken_llama(|d| {
        edit_config(d, |v| {
            v["model_type"] = "gpt2".into();
            v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        })
    }));
    assert!(e.contains("unsupported architecture") && e.contains("GPT2LMHeadModel"), "{e}");
    let e = refused(&broken_llama(|d| edit_config(d, |v| v["rope_parameters"]["rope_type"] = "yarn".into())));
    assert!(e.contains("unsupported") && e.contains("yarn"), "{e}");
    let e = refused(&broken_llama(|d| edit_config(d, |v| v["rope_parameters"]["rope_type"] = "llama3".into())));
    assert!(e.contains("unsupported") && e.contains("llama3") && e.contains("factor"), "{e}");
    let e = refused(&broken_llama(|d| edit_config(d, |v| v["partial_rotary_factor"] = 0.5.into())));
    assert!(e.contains("unsupported") && e.contains("partial_rotary_factor"), "{e}");
    let e = refused(&broken_llama(|d| {
        edit_config(d, |v| v["rope_parameters"] = serde_json::json!({"rope_type": "linear", "factor": 0.5}))
    }));
    assert!(e.contains("factor") && e.contains("at least 1"), "{e}");
    // Files that are not what they say.
    let e =
        refused(&broken_llama(|d| std::fs::write(d.join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap()));
    assert!(e.contains("model.safetensors") && e.contains("not a safetensors file"), "{e}");
    // A file cut short is refused when its header is read, before any tensor.
    let e = refused(&broken_llama(|d| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    }));
    assert!(e.contains("model.safetensors") && e.contains("the header describes"), "{e}");
    let e = refused(&broken_llama(|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap()));
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = refused(&broken_llama(|d| std::fs::write(d.join("config.json"), b"{\"vocab_size\": -1}").unwrap()));
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn gent_llm_checkpoint_continues_a_prompt_and_names_what_is_wrong() {
    let out = gent()
        .args(["llm", "checkpoint"])
        .arg(llama_fixture())
        .args(["--prompt", "MS_57649 | MS_27421", "--top", "3", "--generate", "5", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["architecture"]["kv_heads"], 2);
    assert_eq!(report["next"].as_array().unwrap().len(), 3);
    assert_eq!(report["continuation_ids"].as_array().unwrap().len(), 5);
    assert_eq!(report["continuation_ids"][0], report["next"][0]["id"], "greedy takes the likeliest");
    let out = gent().args(["llm", "checkpoint", "/nonexistent/checkpoint", "--prompt", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/checkpoint/config.json"));
}

#[test]
fn a_llama_checkpoint_fine_tunes_on_call_graphs_and_its_file_reads_back_exactly() {
    use gent::llm::finetuned::{self, FineTuning, Finetuned};
    use gent::llm::generate::{Decoding, Outcome, Request, Sampling, WritesGraphs};
    use gent::llm::pretrained::Pretrained;
    let device = gent::nn::cpu_device();
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).take(300).collect();
    let base = Pretrained::load(&llama_fixture(), &device).unwrap();
    let train = gent::nn::lm::TrainConfig { steps: 40, batch: 8, learning_rate: 3e-3, seed: 1 };
    let t = FineTuning { train, p_drop: 0.5, held_back: 0.1, lora: None };
    let (model, tuned) = Finetuned::train(base, &graphs, &t, &device).unwrap();
    let report = tuned.run;
    // The checkpoint's own tokenizer reads the layers: about 230 of its
    // byte-pair tokens per layer (gent's tokenizer needs a few dozen).
    assert!(report.tokens_per_sequence > 50.0, "{}", report.tokens_per_sequence);
    assert_eq!(report.held_back_graphs, 30);
    let held = &report.trained.held_losses;
    let (first, last) = (held.first().unwrap().1, held.last().unwrap().1);
    assert!(last < first - 0.3, "held-back loss {first} -> {last}: fine-tuning learns the held-back layers");
    // The file carries network, tokenizer and calls: read back, it writes
    // itself byte for byte and generates exactly as before.
    let bytes = model.to_bytes().unwrap();
    assert!(finetuned::is_file(&bytes));
    let again = Finetuned::from_bytes(&bytes, &device, None).unwrap();
    assert_eq!(again.to_bytes().unwrap(), bytes);
    assert_eq!(again.destinations, model.destinations);
    // As session 62 wrote it (`gent-llm-checkpoint/1`, whose variant had no
    // rotary scaling or biases): it reads as the same model, and writes
    // itself anew as this version's file.
    const VERSION: u16 = 4;
    let body = gent::container::open_body_as(&bytes, VERSION).unwrap();
    // The variant: 2 key/value heads, base 500,000, no scaling (variant 0),
    // no biases (false).
    let mut variant = vec![2u8];
    variant.extend(500_000f32.to_le_bytes());
    variant.extend([0, 0]);
    let found: Vec<usize> = body.windows(variant.len()).enumerate().filter(|(_, w)| *w == variant).map(|(i, _)| i).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let mut old = body.clone();
    old.drain(found[0] + 5..found[0] + 7);
    let kind = finetuned::KIND.as_bytes();
    let at = old.windows(kind.len()).position(|w| w == kind).unwrap();
    old[at..at + kind.len()].copy_from_slice(b"gent-llm-checkpoint/1");
    let v1 = Finetuned::from_bytes(&gent::container::seal_body_as(&old, VERSION).unwrap(), &device, None).unwrap();
    assert_eq!(v1.to_bytes().unwrap(), bytes);
    let request = Request { service: graphs[0].service.clone(), num_edges: 2, depth: 2, latency: 100 };
    let sampling = Sampling::default();
    let text = |o: Outcome| match o {
        Outcome::Valid(g) => g.text,
        Outcome::Invalid { reason, text } => format!("{reason}: {text}"),
    };
    for seed in 0..3 {
        let (mut a, mut b) = (model.writer(sampling, seed), again.writer(sampling, seed));
        assert_eq!(text(a.run(&request, Decoding::Free, 256)), text(b.run(&request, Decoding::Free, 256)), "seed {seed}");
    }
    // A rejected graph's text ends with what the model wrote of the layer
    // that failed, so `gent llm generate` can log why: from the request on.
    let large = Request { num_edges: 30, depth: 6, ..request.clone() };
    for seed in 0..3 {
        if let Outcome::Invalid { reason, text } = model.writer(sampling, seed).run(&large, Decoding::Free, 64) {
            assert!(text.starts_with("[GENERATE GRAPH]id:") && text.len() > 100, "{reason}: {text:?}");
        }
    }
    // Constraints over gent's tokens cannot apply to the checkpoint's.
    match model.writer(sampling, 0).run(&request, Decoding::Constrained, 256) {
        Outcome::Invalid { reason, .. } => assert!(reason.to_string().contains("decodes freely only"), "{reason}"),
        Outcome::Valid(_) => panic!("constrained decoding through a checkpoint's tokenizer"),
    }
    // gent's own model reader names what the file is; this reader refuses
    // gent's own models and damaged files.
    let e = gent::llm::model::LanguageModel::from_bytes(&bytes, &device).err().unwrap().to_string();
    assert!(e.contains("--from"), "{e}");
    let e = Finetuned::from_bytes(&bytes[..bytes.len() / 2], &device, None).err().unwrap().to_string();
    assert!(!e.is_empty());
}

#[test]
fn gent_llm_train_from_a_checkpoint_generates_and_evaluates_freely_and_refuses_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train) = (dir.path().join("ft.gent"), data("alibaba/callgraphs_train.txt"));
    // `gent llm train --from` the fixture with `args`, writing `out`: its report.
    let fine_tune = |args: &[&str], out: &std::path::Path| -> serde_json::Value {
        let run = gent()
            .args(["llm", "train", "--batch", "4", "--json", "--from"])
            .arg(llama_fixture())
            .args(args)
            .arg("--out")
            .arg(out)
            .arg(&train)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        serde_json::from_str(String::from_utf8(run.stdout).unwrap().lines().last().unwrap()).unwrap()
    };
    let report = fine_tune(&["--steps", "6"], &model);
    assert_eq!(report["vocabulary"], 320, "the checkpoint's tokenizer");
    assert_eq!(report["steps"], 6);
    let every_weight = report["from_checkpoint"]["trainable_parameters"].as_u64().unwrap();
    assert!(every_weight > 30_000, "{every_weight}");
    // LoRA, as the paper tunes Llama-2: rank-4 adapters on the query and the
    // (grouped) key projections of both blocks: 2 × (32·4 + 4·32 + 32·4 + 4·16).
    let lora = fine_tune(&["--steps", "2", "--lora-rank", "4"], &dir.path().join("lora.gent"));
    assert_eq!(lora["from_checkpoint"]["lora_rank"], 4);
    assert_eq!(lora["from_checkpoint"]["trainable_parameters"], 896);
    let out = gent()
        .args(["llm", "generate", "--conditions", "num_edges:1/depth:1", "--out", "/dev/null", "--checkpoint"])
        .arg(llama_fixture())
        .arg(dir.path().join("lora.gent"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated = dir.path().join("g.txt");
    let run = |args: &[&str]| gent().args(args).output().unwrap();
    let m = model.to_str().unwrap();
    let out = run(&[
        "llm",
        "generate",
        m,
        "--conditions",
        "num_edges:2/depth:1",
        "--count",
        "2",
        "--json",
        "--out",
        generated.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(report["requested"], 2);
    let t = train.to_str().unwrap();
    let out = run(&[
        "llm",
        "eval",
        m,
        "--real",
        t,
        "--max-edges",
        "2",
        "--max-depth",
        "1",
        "--count",
        "1",
        "--similarity-graphs",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    let row = &report["methods"][0];
    assert_eq!(row["decoding"], "free, checkpoint's tokenizer");
    assert_eq!(row["cells"].as_array().unwrap().len(), 2);
    // Refused by name: constraints, tasks that need gent's tokenizer, and
    // a tabular fine-tune.
    let fixture = llama_fixture();
    let fixture = fixture.to_str().unwrap();
    let refusals: [(&[&str], &str); 4] = [
        (&["llm", "generate", m, "--conditions", "num_edges:2/depth:1", "--constrained", "--out", "/dev/null"], "--constrained"),
        (&["llm", "eval", m, "--real", t, "--constrained"], "freely only"),
        (&["llm", "predict", m, "--train", t, "--real", t], "--from"),
        (&["llm", "train", "--from", fixture, "--encoding", "tabular", "--out", "/dev/null", t], "layer encoding"),
    ];
    for (args, says) in refusals {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn a_lora_fine_tune_stores_its_adapters_and_finds_its_checkpoint_by_fingerprint() {
    use gent::llm::finetuned::{FineTuning, Finetuned};
    use gent::llm::generate::{Decoding, Outcome, Request, Sampling, WritesGraphs};
    use gent::llm::pretrained::Pretrained;
    let device = gent::nn::cpu_device();
    let graphs: Vec<CallGraph> = train_graphs().into_iter().map(|(_, g)| g).take(100).collect();
    let dir = broken_llama(|_| {});
    let train = gent::nn::lm::TrainConfig { steps: 20, batch: 8, learning_rate: 1e-2, seed: 3 };
    let lora = gent::nn::lm::LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0 };
    let t = FineTuning { train, p_drop: 0.5, held_back: 0.0, lora: Some(lora) };
    let (model, tuned) = Finetuned::train(Pretrained::load(dir.path(), &device).unwrap(), &graphs, &t, &device).unwrap();
    assert_eq!(tuned.trainable, 896);
    let losses = &tuned.run.trained.losses;
    assert!(losses.last().unwrap() < losses.first().unwrap(), "{losses:?}");
    // The file holds the adapters, not the checkpoint's weights.
    let bytes = model.to_bytes().unwrap();
    let checkpoint_bytes = std::fs::metadata(dir.path().join("model.safetensors")).unwrap().len() as usize;
    assert!(bytes.len() < checkpoint_bytes / 2, "{} bytes against the checkpoint's {checkpoint_bytes}", bytes.len());
    // Read back, the checkpoint and adapters make the same network.
    let again = Finetuned::from_bytes(&bytes, &device, None).unwrap();
    let request = Request { service: graphs[0].service.clone(), num_edges: 1, depth: 1, latency: 10 };
    let text = |m: &Finetuned, seed| match m.writer(Sampling::default(), seed).run(&request, Decoding::Free, 200) {
        Outcome::Valid(g) => g.text,
        Outcome::Invalid { reason, text } => format!("{reason}: {text}"),
    };
    for seed in 0..3 {
        assert_eq!(text(&model, seed), text(&again, seed), "seed {seed}");
    }
    // Another checkpoint where it was is refused; the right one elsewhere
    // is found with --checkpoint; a missing one is named.
    edit_config(dir.path(), |v| v["rms_norm_eps"] = 1e-5.into());
    let e = Finetuned::from_bytes(&bytes, &device, None).err().unwrap().to_string();
    assert!(e.contains("not the checkpoint this model was tuned on") && e.contains("--checkpoint"), "{e}");
    assert!(Finetuned::from_bytes(&bytes, &device, Some(&llama_fixture())).is_ok());
    let path = dir.path().display().to_string();
    drop(dir);
    let e = Finetuned::from_bytes(&bytes, &device, None).err().unwrap().to_string();
    assert!(e.contains(&path) && e.contains("config.json") && e.contains("--checkpoint"), "{e}");
}

#[test]
fn a_checkpoint_tokenizers_padding_and_truncation_are_off_as_in_hugging_face() {
    use gent::llm::pretrained::Pretrained;
    let device = gent::nn::cpu_device();
    let dir = broken_llama(|d| {
        let path = d.join("tokenizer.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"});
        v["truncation"] = serde_json::json!({"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0});
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    });
    let text = "(source is USER,type is http,destination is MS_48488,communication starts at 0 milliseconds)";
    // Read as the file says, every text comes out 64 tokens long.
    let raw = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(raw.encode(text, true).unwrap().get_ids().len(), 64);
    let plain = Pretrained::load(&llama_fixture(), &device).unwrap().encode(text).unwrap();
    assert!(plain.len() > 16 && plain.len() < 64, "{}", plain.len());
    assert_eq!(Pretrained::load(dir.path(), &device).unwrap().encode(text).unwrap(), plain);
}

/// A size or rotary setting drawn for a hostile `config.json`: mostly the
/// fixture's own `fit` (so that loading goes deep), else small, zero, huge,
/// fractional, negative or absent.
fn config_value(fit: serde_json::Value) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    prop_oneof![
        20 => Just(fit),
        1 => (0u64..70).prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::from(u64::MAX)),
        1 => Just(serde_json::Value::from(1u64 << 40)),
        1 => (-1e9f64..1e9).prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
    ]
}

/// The fixture's config values for [`any_checkpoint_config_loads_or_is_refused`]'s fields.
fn config_values() -> impl proptest::strategy::Strategy<Value = Vec<serde_json::Value>> {
    let fits: [serde_json::Value; 12] = [
        320.into(),
        32.into(),
        64.into(),
        2.into(),
        4.into(),
        2.into(),
        8.into(),
        256.into(),
        serde_json::Value::Null,
        1e-6.into(),
        500_000.0.into(),
        8.0.into(),
    ];
    fits.into_iter().map(config_value).collect::<Vec<_>>()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Whatever a config says of its sizes and rotary encoding, the loader
    /// answers with a network or an error, never a panic or a runaway
    /// allocation.
    #[test]
    fn any_checkpoint_config_loads_or_is_refused(
        values in config_values(),
        rope_type in proptest::sample::select(vec!["default", "linear", "llama3", "yarn"]),
        model_type in proptest::sample::select(vec!["llama", "mistral", "qwen2"]),
    ) {
        use gent::llm::pretrained::Pretrained;
        let fields = [
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window", "rms_norm_eps",
        ];
        let dir = broken_llama(|d| {
            edit_config(d, |v| {
                for (field, value) in fields.iter().zip(&values) {
                    v[*field] = value.clone();
                }
                v["model_type"] = model_type.into();
                v.as_object_mut().unwrap().remove("architectures");
                v["rope_parameters"] = serde_json::json!({
                    "rope_type": rope_type, "rope_theta": values[10], "factor": values[11],
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": values[7],
                });
            })
        });
        match Pretrained::load(dir.path(), &gent::nn::cpu_device()) {
            Ok(m) => proptest::prop_assert_eq!(m.checkpoint.config.d_model, 32),
            Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
        }
    }
}
