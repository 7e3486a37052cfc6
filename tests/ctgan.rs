//! CTGAN training end to end on small tables: it learns, it is reproducible,
//! and bad configurations are refused.

mod common;

use burn::tensor::Device;
use gent::nn::{Ctgan, CtganConfig, CtganError};
use gent::tabular::{Column, ColumnData, Table};

/// Two perfectly correlated labels and a four-mode number.
fn table() -> Table {
    let n = 3000;
    let a: Vec<String> = (0..n).map(|i| ["A", "B", "C", "D"][i % 4].to_string()).collect();
    let b: Vec<String> = (0..n).map(|i| ["a", "b", "c", "d"][i % 4].to_string()).collect();
    let x: Vec<f64> = (0..n).map(|i| (i % 4) as f64 * 10.0 + (i % 7) as f64 * 0.1).collect();
    Table::new(vec![Column::categorical("a", a), Column::categorical("b", b), Column::continuous("x", x, false)]).unwrap()
}

fn small(epochs: usize, seed: u64) -> CtganConfig {
    CtganConfig { epochs, generator: vec![64, 64], critic: vec![64, 64], embedding: 32, seed, ..CtganConfig::default() }
}

fn labels(t: &Table, i: usize) -> &Vec<String> {
    match &t.columns[i].data {
        ColumnData::Categorical(v) => v,
        _ => panic!("categorical"),
    }
}

/// Issue 4's quality measure on real data: one row per span of the first
/// 20,000 spans of TrainTicket hour 12 (service, span name, log duration, gap
/// from parent), learnt at Gen-T's widths for 40 epochs, then sampled.
#[test]
fn learns_trainticket_spans_closer_than_independent_columns() {
    use gent::tabular::quality;
    let paths: Vec<_> = (0..60).map(|m| common::data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect();
    let real = quality::span_table(&common::read_set(&paths), 20_000).unwrap();
    assert_eq!(real.rows(), 20_000);
    let config = CtganConfig { epochs: 40, seed: 7, generator: vec![128, 128], critic: vec![128, 128], ..CtganConfig::default() };
    let model = Ctgan::fit(&real, None, config, &Device::flex()).unwrap();
    let synthetic = model.sample(real.rows(), None, 11).unwrap();
    let baseline = quality::independent_columns(&real, real.rows(), 3);
    let w1 = |t: &Table| quality::grouped_w1(&real, t, 0, 2, f64::ln_1p);
    let (w_model, w_base) = (w1(&synthetic), w1(&baseline));
    let (tv_model, tv_base) = (quality::tv(&real, &synthetic, &[0, 1]), quality::tv(&real, &baseline, &[0, 1]));
    println!(
        "per-service log-duration W1: ctgan {w_model:.3}, independent {w_base:.3}; (service, name) TV: ctgan {tv_model:.3}, \
         independent {tv_base:.3}; pairs seen in the real data {:.3}",
        quality::seen_combinations(&real, &synthetic, &[0, 1])
    );
    assert!(w_model < 0.8 * w_base, "duration W1 {w_model:.3} is not clearly below the baseline's {w_base:.3}");
    assert!(tv_model < 0.1, "joint (service, name) TV {tv_model:.3} is not within 0.1");
}

#[test]
fn learns_a_perfect_correlation_between_labels_and_the_modes_of_a_number() {
    let model = Ctgan::fit(&table(), None, small(300, 1), &Device::flex()).unwrap();
    let s = model.sample(2000, None, 2).unwrap();
    let (a, b) = (labels(&s, 0), labels(&s, 1));
    let pairs = a.iter().zip(b).filter(|(x, y)| x.to_lowercase() == **y).count() as f64 / 2000.0;
    let ColumnData::Continuous { values: x, .. } = &s.columns[2].data else { panic!() };
    // The number's mode follows the label: A → about 0, B → about 10, ...
    let near = a.iter().zip(x).filter(|(l, v)| {
        let mode = ["A", "B", "C", "D"].iter().position(|m| m == l).unwrap() as f64 * 10.0;
        (*v - mode).abs() < 3.0
    });
    let modes = near.count() as f64 / 2000.0;
    println!("matching label pairs {pairs:.3}, numbers in their label's mode {modes:.3}");
    assert!(pairs > 0.9, "label pairs match only {pairs}");
    assert!(modes > 0.8, "numbers follow their label only {modes}");
}

#[test]
fn the_same_seed_trains_the_same_model() {
    let t = table();
    let a = Ctgan::fit(&t, None, small(2, 5), &Device::flex()).unwrap().sample(500, None, 9).unwrap();
    let b = Ctgan::fit(&t, None, small(2, 5), &Device::flex()).unwrap().sample(500, None, 9).unwrap();
    assert_eq!(a, b);
    let c = Ctgan::fit(&t, None, small(2, 6), &Device::flex()).unwrap().sample(500, None, 9).unwrap();
    assert_ne!(a, c);
}

#[test]
fn bad_configurations_are_refused_clearly() {
    let t = table();
    let fit = |config| Ctgan::fit(&t, None, config, &Device::flex()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(fit(small(0, 1)).contains("epochs"));
    assert!(fit(CtganConfig { batch: 505, ..small(1, 1) }).contains("multiple of pac"));
    assert!(fit(CtganConfig { pac: 0, ..small(1, 1) }).contains("multiple of pac"));
    assert!(fit(CtganConfig { max_steps: Some(0), ..small(1, 1) }).contains("max_steps"));
    assert!(fit(CtganConfig { learning_rate: f64::NAN, ..small(1, 1) }).contains("learning_rate"));
    let constant = Table::new(vec![Column::continuous("c", vec![1.0; 100], false)]).unwrap();
    let e = Ctgan::fit(&constant, None, small(1, 1), &Device::flex()).err().unwrap();
    assert!(matches!(e, CtganError::Table(_)) && e.to_string().contains("single value"), "{e}");
    let ctx = gent::nn::Context::vectors(&[0.0; 3], 2);
    assert!(matches!(Ctgan::fit(&t, Some(ctx), small(1, 1), &Device::flex()), Err(CtganError::Context { .. })));
}

mod persistence {
    use super::*;
    use gent::nn::weights::Precision;

    #[test]
    fn a_stored_model_samples_exactly_as_the_trained_one_and_f16_halves_it_int8_quarters_it() {
        let t = table();
        let model = Ctgan::fit(&t, None, small(3, 5), &Device::flex()).unwrap();
        let expected = model.sample(800, None, 3).unwrap();
        let full = model.to_bytes(Precision::F32).unwrap();
        let loaded = Ctgan::from_bytes(&full, &Device::flex()).unwrap();
        assert_eq!(loaded.sample(800, None, 3).unwrap(), expected);

        assert_eq!(model.sample(800, None, 3).unwrap(), expected, "sampling twice");
        let half = model.to_bytes(Precision::F16).unwrap();
        // Storing at f16 leaves the model itself as it was (it used to retype its weights).
        assert_eq!(model.sample(800, None, 3).unwrap(), expected);
        let ratio = half.len() as f64 / full.len() as f64;
        println!("stored model: f32 {} bytes, f16 {} bytes ({ratio:.2})", full.len(), half.len());
        assert!(ratio < 0.56, "f16 model is {ratio:.2} of the f32 one");
        let from_half = Ctgan::from_bytes(&half, &Device::flex()).unwrap().sample(800, None, 3).unwrap();
        // f16 rounding moves few categorical decisions.
        let same = labels(&from_half, 0).iter().zip(labels(&expected, 0)).filter(|(a, b)| a == b).count();
        assert!(same > 700, "only {same} of 800 labels survive f16 storage");

        // int8 with a scale per row: about a quarter, and the model as it was.
        let int8 = model.to_bytes(Precision::Int8).unwrap();
        assert_eq!(model.sample(800, None, 3).unwrap(), expected);
        let ratio = int8.len() as f64 / full.len() as f64;
        println!("stored model: int8 {} bytes ({ratio:.2})", int8.len());
        assert!(ratio < 0.32, "int8 model is {ratio:.2} of the f32 one");
        let from_int8 = Ctgan::from_bytes(&int8, &Device::flex()).unwrap().sample(800, None, 3).unwrap();
        let same = labels(&from_int8, 0).iter().zip(labels(&expected, 0)).filter(|(a, b)| a == b).count();
        println!("labels that survive int8 storage: {same} of 800");
        assert!(same > 600, "only {same} of 800 labels survive int8 storage");
    }

    #[test]
    fn damaged_or_foreign_bytes_are_refused_clearly() {
        let model = Ctgan::fit(&table(), None, small(1, 5), &Device::flex()).unwrap();
        let bytes = model.to_bytes(Precision::F32).unwrap();
        for bad in [&bytes[..bytes.len() / 2], &bytes[..3], b"not a model".as_slice()] {
            let e = Ctgan::from_bytes(bad, &Device::flex()).err().expect("refused");
            assert!(e.to_string().contains("stored CTGAN model") || e.to_string().contains("weights"), "{e}");
        }
        let mut other_format = bytes.clone();
        other_format[0] = 9; // the format number is the first varint
        let e = Ctgan::from_bytes(&other_format, &Device::flex()).err().expect("refused");
        assert!(e.to_string().contains("format 9"), "{e}");
    }
}

mod warm_start {
    use super::*;

    #[test]
    fn a_warm_start_continues_from_the_previous_weights() {
        let t = table();
        let previous = Ctgan::fit(&t, None, small(150, 1), &Device::flex()).unwrap();
        let pairs = |m: &Ctgan| {
            let s = m.sample(2000, None, 2).unwrap();
            labels(&s, 0).iter().zip(labels(&s, 1)).filter(|(x, y)| x.to_lowercase() == **y).count() as f64 / 2000.0
        };
        // One epoch from scratch learns little; one epoch from the previous model keeps what it learnt.
        let cold = Ctgan::fit(&t, None, small(1, 2), &Device::flex()).unwrap();
        let warm = Ctgan::fit_warm(&t, None, small(1, 2), &Device::flex(), Some(&previous)).unwrap();
        let (p, c, w) = (pairs(&previous), pairs(&cold), pairs(&warm));
        println!("matching pairs: previous {p:.3}, one epoch cold {c:.3}, one epoch warm {w:.3}");
        assert!(warm.warm_started() && !cold.warm_started());
        assert!(w > c + 0.2 && w > p - 0.1, "warm {w}, cold {c}, previous {p}");
    }

    #[test]
    fn an_incompatible_previous_model_means_a_fresh_start() {
        let t = table();
        let previous = Ctgan::fit(&t, None, small(1, 1), &Device::flex()).unwrap();
        // A category the previous transformer never saw.
        let mut a = labels(&t, 0).clone();
        a[0] = "E".into();
        let changed = Table::new(vec![Column::categorical("a", a), t.columns[1].clone(), t.columns[2].clone()]).unwrap();
        let model = Ctgan::fit_warm(&changed, None, small(1, 1), &Device::flex(), Some(&previous)).unwrap();
        assert!(!model.warm_started());
        // Other dimensions.
        let wider = CtganConfig { generator: vec![64, 64, 64], ..small(1, 1) };
        assert!(!Ctgan::fit_warm(&t, None, wider, &Device::flex(), Some(&previous)).unwrap().warm_started());
    }
}

/// A generator capped in bytes is built narrower until its f16 weights fit
/// (or it reaches the narrowest widths), still learns the pairs, and a capped model
/// warm-starts the next one at its own widths.
#[test]
fn a_generator_capped_in_bytes_is_narrowed_to_fit_and_warm_starts_at_its_widths() {
    use gent::nn::weights::Precision;
    let t = table();
    let wide =
        CtganConfig { embedding: 128, generator: vec![128], critic: vec![64], epochs: 150, seed: 1, ..CtganConfig::default() };
    let capped = CtganConfig { max_generator_bytes: Some(6_000), ..wide.clone() };
    let free = Ctgan::fit(&t, None, wide, &Device::flex()).unwrap();
    let small = Ctgan::fit(&t, None, capped.clone(), &Device::flex()).unwrap();
    let bytes = |m: &Ctgan| m.to_bytes(Precision::F16).unwrap().len();
    println!("f16 model: {} bytes free, {} capped", bytes(&free), bytes(&small));
    assert!(bytes(&small) * 4 < bytes(&free), "{} against {}", bytes(&small), bytes(&free));
    let pairs = |m: &Ctgan| {
        let s = m.sample(2000, None, 2).unwrap();
        labels(&s, 0).iter().zip(labels(&s, 1)).filter(|(x, y)| x.to_lowercase() == **y).count() as f64 / 2000.0
    };
    let (p_free, p_small) = (pairs(&free), pairs(&small));
    println!("matching pairs: {p_free:.3} free, {p_small:.3} capped");
    // Narrower learns slower (150 epochs: 0.86 against 0.99), far above
    // the 0.25 of independent labels.
    assert!(p_small > 0.7, "capped {p_small:.3}, free {p_free:.3}");
    let next = Ctgan::fit_warm(&t, None, CtganConfig { epochs: 1, ..capped }, &Device::flex(), Some(&small)).unwrap();
    assert!(next.warm_started(), "not warm-started from the capped model");
    // The same widths (the stored settings differ by the epochs' varint).
    assert!(bytes(&next).abs_diff(bytes(&small)) <= 2, "{} against {}", bytes(&next), bytes(&small));
}

mod graphs {
    use super::*;
    use gent::nn::weights::Precision;
    use gent::nn::{Context, GraphInput, pooled_features};

    /// Four small graphs over three node labels (each a fixed ±1 code), the
    /// last two with the same labels in different shapes; node features are
    /// the label's code and the node's depth, as Gen-T builds them.
    fn graph_features() -> (Vec<f32>, usize) {
        const CODES: [[f32; 4]; 3] = [[1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]];
        let graphs: [(&[usize], &[Option<u32>]); 4] = [
            (&[0], &[None]),
            (&[0, 1], &[None, Some(0)]),
            (&[0, 1, 2], &[None, Some(0), Some(1)]),
            (&[0, 1, 2], &[None, Some(0), Some(0)]),
        ];
        let mut out = Vec::new();
        for (labels, parents) in graphs {
            let depth = |mut k: usize| {
                let mut d = 0.0;
                while let Some(p) = parents[k] {
                    (k, d) = (p as usize, d + 1.0);
                }
                d
            };
            let nodes: Vec<f32> = labels.iter().enumerate().flat_map(|(k, &l)| CODES[l].into_iter().chain([depth(k)])).collect();
            out.extend(pooled_features(&nodes, 5, parents));
        }
        (out, 5)
    }

    /// A label and a number that the row's graph decides, equally frequent overall.
    fn table(rows: usize) -> (Table, Vec<u32>) {
        let ids: Vec<u32> = (0..rows as u32).map(|i| i % 4).collect();
        let x = ids.iter().map(|&g| ["p", "q", "r", "s"][g as usize].to_string()).collect();
        let y = ids.iter().enumerate().map(|(i, &g)| f64::from(g) * 10.0 + (i % 5) as f64 * 0.2).collect();
        (Table::new(vec![Column::categorical("x", x), Column::continuous("y", y, false)]).unwrap(), ids)
    }

    /// Shares of sampled rows whose label, and whose number, fit their graph.
    fn fit_to_graphs(s: &Table, ids: &[u32]) -> (f64, f64) {
        let ColumnData::Continuous { values: y, .. } = &s.columns[1].data else { panic!() };
        let n = ids.len() as f64;
        let labels_ok = labels(s, 0).iter().zip(ids).filter(|(l, g)| **l == ["p", "q", "r", "s"][**g as usize]).count();
        let numbers_ok = y.iter().zip(ids).filter(|(v, g)| (**v - f64::from(**g) * 10.0).abs() < 3.0).count();
        (labels_ok as f64 / n, numbers_ok as f64 / n)
    }

    #[test]
    fn rows_follow_the_graph_they_belong_to_through_the_gcn_embedding() {
        let (features, width) = graph_features();
        let (t, ids) = table(2000);
        let graph = GraphInput { features: &features, width, rows: &ids };
        let context = Context { values: &[], width: 0, graph: Some(graph) };
        let model = Ctgan::fit(&t, Some(context), small(400, 3), &Device::flex()).unwrap();
        let sample_ids: Vec<u32> = (0..2000u32).map(|i| (i * 7 + 1) % 4).collect();
        let wanted = Context { values: &[], width: 0, graph: Some(GraphInput { rows: &sample_ids, ..graph }) };
        let s = model.sample(2000, Some(wanted), 4).unwrap();
        let (labels_ok, numbers_ok) = fit_to_graphs(&s, &sample_ids);
        println!("labels matching their graph {labels_ok:.3}, numbers in their graph's mode {numbers_ok:.3}");

        // Without the graph a label would match one time in four.
        assert!(labels_ok > 0.8 && numbers_ok > 0.8, "labels {labels_ok}, numbers {numbers_ok}");

        // The stored generator keeps its GCN; sampling needs the graphs.
        let loaded = Ctgan::from_bytes(&model.to_bytes(Precision::F32).unwrap(), &Device::flex()).unwrap();
        assert_eq!(loaded.sample(2000, Some(wanted), 4).unwrap(), s);
        let e = loaded.sample(10, None, 4).err().expect("graphs are required").to_string();
        assert!(e.contains("graph"), "{e}");
        let bad_ids = [0, 1, 9];
        let bad = Context { values: &[], width: 0, graph: Some(GraphInput { rows: &bad_ids, ..graph }) };
        let e = loaded.sample(3, Some(bad), 4).err().expect("an unknown graph is refused").to_string();
        assert!(e.contains("graph id 9"), "{e}");
    }
}
