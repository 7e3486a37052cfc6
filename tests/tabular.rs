//! CTGAN's table encoding on real data: TrainTicket hour 12, one row per span.

mod common;
use common::*;

use gent::tabular::{Column, ColumnData, ConditionalSampler, Table, TabularError, Transformer};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// service, span name, duration (µs, log-scaled), gap from parent start (µs).
fn span_table(files: usize) -> Table {
    let paths: Vec<_> = (0..files).map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect();
    gent::tabular::quality::span_table(&read_set(&paths), usize::MAX).unwrap()
}

fn std_dev(xs: &[f64]) -> f64 {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
}

#[test]
fn real_columns_round_trip_through_the_encoding() {
    let table = span_table(5);
    let transformer = Transformer::fit(&table, 42).unwrap();
    let encoded = transformer.transform(&table, 7).unwrap();
    assert_eq!(encoded.len(), table.rows() * transformer.width());
    let back = transformer.inverse(&encoded).unwrap();
    for (a, b) in table.columns.iter().zip(&back.columns) {
        match (&a.data, &b.data) {
            (ColumnData::Categorical(x), ColumnData::Categorical(y)) => {
                assert_eq!(x, y, "{}", a.name)
            }
            (ColumnData::Continuous { values: x, log }, ColumnData::Continuous { values: y, .. }) => {
                let logged: Vec<f64> = x.iter().map(|v| if *log { v.ln_1p() } else { *v }).collect();
                let scale = std_dev(&logged);
                for (u, v) in logged.iter().zip(y) {
                    let v = if *log { v.ln_1p() } else { *v };
                    assert!((u - v).abs() <= 1e-5 * (u.abs() + scale), "{}: {u} came back as {v}", a.name);
                }
            }
            _ => panic!("column kinds changed"),
        }
    }
    // Modes: several for durations (TrainTicket latencies are multi-modal), and
    // every kept mode above the pruning threshold.
    let gent::tabular::ColumnTransform::Continuous { mixture, .. } = &transformer.columns[2] else { panic!() };
    assert!(mixture.len() >= 2 && mixture.len() <= gent::tabular::MAX_MODES, "{mixture:?}");
    assert!(mixture.weights.iter().all(|&w| w > gent::tabular::WEIGHT_THRESHOLD));
}

#[test]
fn fitting_and_encoding_are_deterministic_given_seeds() {
    let table = span_table(2);
    let a = Transformer::fit(&table, 1).unwrap();
    let b = Transformer::fit(&table, 1).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.transform(&table, 5).unwrap(), b.transform(&table, 5).unwrap());
    assert_ne!(a.transform(&table, 5).unwrap(), a.transform(&table, 6).unwrap(), "modes are sampled");
}

#[test]
fn training_by_sampling_favours_rare_categories_and_finds_their_rows() {
    let table = span_table(2);
    let transformer = Transformer::fit(&table, 1).unwrap();
    let encoded = transformer.transform(&table, 1).unwrap();
    let sampler = ConditionalSampler::new(&transformer, &encoded);
    let services = match &table.columns[0].data {
        ColumnData::Categorical(v) => v.clone(),
        _ => unreachable!(),
    };
    let gent::tabular::ColumnTransform::Categorical { categories, .. } = &transformer.columns[0] else { panic!() };
    assert_eq!(sampler.cond_width(), categories.len() + transformer.columns[1].width());
    let mut rng = StdRng::seed_from_u64(3);
    let batch = sampler.sample_train(20_000, &mut rng).unwrap();
    let width = transformer.width();
    let mut picked = vec![0usize; categories.len()];
    for r in 0..20_000 {
        assert_eq!(batch.cond[r * sampler.cond_width()..(r + 1) * sampler.cond_width()].iter().sum::<f32>(), 1.0);
        if batch.column[r] == 0 {
            picked[batch.category[r]] += 1;
            let row = sampler.sample_row(0, batch.category[r], table.rows(), &mut rng);
            assert_eq!(encoded[row * width + sampler.data_offset(0) + batch.category[r]], 1.0);
        }
    }
    // The rarest service is picked far more often than its share of rows.
    let count = |c: &str| services.iter().filter(|s| *s == c).count();
    let rarest = (0..categories.len()).min_by_key(|&k| count(&categories[k])).unwrap();
    let share = count(&categories[rarest]) as f64 / services.len() as f64;
    let picked_share = picked[rarest] as f64 / picked.iter().sum::<usize>() as f64;
    assert!(picked_share > 2.0 * share, "rarest picked {picked_share}, share {share}");
}

#[test]
fn bad_tables_are_refused_with_the_column_named() {
    let labels = || vec!["a".to_string(), "b".to_string()];
    assert_eq!(Table::new(vec![]), Err(TabularError::NoColumns));
    assert_eq!(Table::new(vec![Column::continuous("x", vec![], false)]), Err(TabularError::Empty));
    let e = Table::new(vec![Column::continuous("x", vec![1.0, f64::NAN], false)]).unwrap_err();
    assert!(e.to_string().contains("\"x\" row 1") && e.to_string().contains("NaN"), "{e}");
    let e = Table::new(vec![Column::continuous("x", vec![1.0, f64::INFINITY], false)]).unwrap_err();
    assert!(e.to_string().contains("not a finite number"), "{e}");
    let e = Table::new(vec![Column::continuous("d", vec![1.0, -2.0], true)]).unwrap_err();
    assert!(e.to_string().contains("negative"), "{e}");
    let e = Table::new(vec![Column::categorical("s", labels()), Column::continuous("x", vec![1.0], false)]).unwrap_err();
    assert!(matches!(e, TabularError::Ragged { .. }), "{e}");
    let constant = Table::new(vec![Column::continuous("c", vec![3.0; 10], false)]).unwrap();
    let e = Transformer::fit(&constant, 0).unwrap_err();
    assert!(e.to_string().contains("\"c\" holds a single value"), "{e}");
    let one_label = Table::new(vec![Column::categorical("s", vec!["a".into(); 4])]).unwrap();
    assert!(matches!(Transformer::fit(&one_label, 0), Err(TabularError::Constant { .. })));
    let fitted = Transformer::fit(&Table::new(vec![Column::categorical("s", labels())]).unwrap(), 0).unwrap();
    let unseen = Table::new(vec![Column::categorical("s", vec!["z".into()])]).unwrap();
    assert!(matches!(fitted.transform(&unseen, 0), Err(TabularError::UnknownCategory { .. })));
    assert!(matches!(fitted.inverse(&[1.0, 0.0, 0.0]), Err(TabularError::Width { .. })));
}
