//! CTGAN training end to end on small tables: it learns, it is reproducible,
//! and bad configurations are refused.

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
    assert!(fit(CtganConfig { learning_rate: f64::NAN, ..small(1, 1) }).contains("learning_rate"));
    let constant = Table::new(vec![Column::continuous("c", vec![1.0; 100], false)]).unwrap();
    let e = Ctgan::fit(&constant, None, small(1, 1), &Device::flex()).err().unwrap();
    assert!(matches!(e, CtganError::Table(_)) && e.to_string().contains("single value"), "{e}");
    let ctx = gent::nn::Context { values: &[0.0; 3], width: 2 };
    assert!(matches!(Ctgan::fit(&t, Some(ctx), small(1, 1), &Device::flex()), Err(CtganError::Context { .. })));
}
