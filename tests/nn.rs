//! The critic's explicit input gradient against finite differences and against
//! burn's own first-order autodiff, and the penalty built on it.

use burn::tensor::{Device, Tensor, TensorData};
use gent::nn::Critic;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tensor(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

const ROWS: usize = 6;
const INPUT: usize = 5;
const PAC: usize = 3;

fn setup() -> (Critic, Vec<f32>, Device) {
    let device = Device::flex();
    let critic = Critic::new(INPUT, PAC, &[16, 8], 11, &device);
    let mut rng = StdRng::seed_from_u64(5);
    let x: Vec<f32> = (0..ROWS * INPUT).map(|_| rng.random_range(-1.0..1.0)).collect();
    (critic, x, device)
}

fn score_sum(critic: &Critic, x: &[f32], device: &Device) -> f64 {
    let (score, _) = critic.forward(tensor(x.to_vec(), [ROWS, INPUT], device), &None);
    values(score).iter().map(|&v| v as f64).sum()
}

#[test]
fn explicit_input_gradient_matches_finite_differences() {
    let (critic, x, device) = setup();
    let (_, masks) = critic.forward(tensor(x.clone(), [ROWS, INPUT], &device), &None);
    let explicit = values(critic.input_gradient(&masks, ROWS, INPUT));
    let numeric = |i: usize, eps: f32| {
        let (mut up, mut down) = (x.clone(), x.clone());
        up[i] += eps;
        down[i] -= eps;
        (score_sum(&critic, &up, &device) - score_sum(&critic, &down, &device)) / (2.0 * eps as f64)
    };
    for i in 0..x.len() {
        let e = explicit[i] as f64;
        let close = |n: f64| (n - e).abs() <= 2e-3 + 1e-2 * e.abs();
        // A step can cross a LeakyReLU kink; the gradient must then match at a
        // smaller step on the same side.
        let (a, b) = (numeric(i, 1e-2), numeric(i, 2e-3));
        assert!(close(a) || close(b), "input {i}: explicit {e}, finite differences {a} and {b}");
    }
}

#[test]
fn explicit_input_gradient_matches_autodiff_with_dropout() {
    let (_, x, _) = setup();
    let device = Device::flex().autodiff();
    let critic = Critic::new(INPUT, PAC, &[16, 8], 11, &device);
    let mut rng = StdRng::seed_from_u64(9);
    let dropout: Vec<Tensor<2>> = critic
        .hidden_widths()
        .iter()
        .map(|&h| {
            let keep: Vec<f32> = (0..(ROWS / PAC) * h).map(|_| if rng.random::<bool>() { 2.0 } else { 0.0 }).collect();
            tensor(keep, [ROWS / PAC, h], &device)
        })
        .collect();
    let dropout = Some(dropout);
    let input = tensor(x, [ROWS, INPUT], &device).require_grad();
    let (score, masks) = critic.forward(input.clone(), &dropout);
    let grads = score.sum().backward();
    let autodiff = values(input.grad(&grads).expect("input gradient"));
    let explicit = values(critic.input_gradient(&masks, ROWS, INPUT));
    for (a, e) in autodiff.iter().zip(&explicit) {
        assert!((a - e).abs() <= 1e-5 + 1e-4 * a.abs(), "autodiff {a}, explicit {e}");
    }
}

#[test]
fn the_gradient_penalty_trains_the_weights() {
    let (_, x, _) = setup();
    let device = Device::flex().autodiff();
    let critic = Critic::new(INPUT, PAC, &[16, 8], 3, &device);
    let penalty = critic.gradient_penalty(tensor(x, [ROWS, INPUT], &device), &None, 10.0);
    let value = penalty.clone().into_data().try_to_vec::<f32>().unwrap()[0];
    assert!(value.is_finite() && value >= 0.0);
    let grads = penalty.backward();
    // The penalty reaches every weight matrix through the explicit gradient.
    for (i, weight) in critic.weights().iter().enumerate() {
        let grad = weight.grad(&grads).map(values).unwrap_or_default();
        assert!(grad.iter().any(|g| g.abs() > 0.0), "the penalty must move layer {i}");
    }
}

mod generator {
    use super::*;
    use gent::nn::{DiscreteSpan, Generator, activate, conditional_loss, sample_rows};
    use gent::tabular::{Activation, OutputSpan};

    const SPANS: [OutputSpan; 3] = [
        OutputSpan { width: 1, activation: Activation::Tanh },
        OutputSpan { width: 3, activation: Activation::Softmax },
        OutputSpan { width: 4, activation: Activation::Softmax },
    ];

    fn noise(rows: usize, width: usize, seed: u64, device: &Device) -> Tensor<2> {
        let mut rng = StdRng::seed_from_u64(seed);
        tensor((0..rows * width).map(|_| rng.random_range(-1.0f32..1.0)).collect(), [rows, width], device)
    }

    #[test]
    fn rows_come_out_shaped_as_the_encoding_asks() {
        let device = Device::flex().autodiff();
        let g = Generator::new(6, &[16, 16], 8, 1, &device);
        let raw = g.forward(noise(10, 6, 2, &device));
        assert_eq!(raw.dims(), [10, 8]);
        let rows = values(activate(raw, &SPANS, noise(10, 8, 3, &device), 0.2));
        for r in rows.chunks(8) {
            assert!(r[0] > -1.0 && r[0] < 1.0);
            assert!((r[1..4].iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!((r[4..8].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // The same seed builds the same generator.
        let again = Generator::new(6, &[16, 16], 8, 1, &device);
        assert_eq!(values(g.forward(noise(4, 6, 9, &device))), values(again.forward(noise(4, 6, 9, &device))));
    }

    #[test]
    fn sampled_categories_follow_the_softmax_of_the_logits() {
        // Logits of one row, repeated: a scalar, then 3 and 4 categories.
        let logits = [0.3f32, 2.0, 0.0, -1.0, 0.5, 0.5, f32::NEG_INFINITY, -2.0];
        let rows = 100_000;
        let mut out: Vec<f32> = logits.iter().copied().cycle().take(rows * 8).collect();
        sample_rows(&mut out, &SPANS, &mut StdRng::seed_from_u64(1));
        let softmax = |l: &[f32]| {
            let e: Vec<f64> = l.iter().map(|&v| f64::from(v).exp()).collect();
            let t: f64 = e.iter().sum();
            e.into_iter().map(|v| v / t).collect::<Vec<_>>()
        };
        for (range, expected) in [(1..4, softmax(&logits[1..4])), (4..8, softmax(&logits[4..8]))] {
            let mut counts = vec![0usize; range.len()];
            for row in out.chunks(8) {
                let part = &row[range.clone()];
                assert_eq!(part.iter().sum::<f32>(), 1.0, "one-hot");
                counts[part.iter().position(|&v| v == 1.0).unwrap()] += 1;
            }
            for (c, p) in counts.iter().zip(&expected) {
                assert!((*c as f64 / rows as f64 - p).abs() < 0.005, "{counts:?} vs {expected:?}");
            }
        }
        assert!(out.chunks(8).all(|r| (r[0] - 0.3f32.tanh()).abs() < 1e-6), "scalars are tanh");
    }

    #[test]
    fn the_conditional_loss_rewards_the_chosen_category() {
        let device = Device::flex();
        let discrete = [DiscreteSpan { data_offset: 1, cond_offset: 0, width: 3 }];
        // Row 0 chose category 2, row 1 category 0.
        let cond = tensor(vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [2, 3], &device);
        let loss =
            |raw: Vec<f32>| values(conditional_loss(tensor(raw, [2, 4], &device), cond.clone(), &discrete).reshape([1, 1]))[0];
        let uniform = loss(vec![0.0; 8]);
        assert!((uniform - 3f32.ln()).abs() < 1e-5, "{uniform}");
        let right = loss(vec![0.0, 0.0, 0.0, 9.0, 0.0, 9.0, 0.0, 0.0]);
        let wrong = loss(vec![0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0]);
        assert!(right < 0.01 && wrong > 8.0, "right {right}, wrong {wrong}");
    }
}

mod persistence {
    use super::*;
    use burn::module::Module;
    use gent::nn::weights::Precision;
    use gent::nn::{Generator, weights};

    #[test]
    fn weights_round_trip_through_bytes_and_refuse_the_wrong_shape() {
        let device = Device::flex();
        let trained = Generator::new(6, &[16, 16], 8, 1, &device);
        let x = || {
            let mut rng = StdRng::seed_from_u64(4);
            tensor((0..24).map(|_| rng.random_range(-1.0f32..1.0)).collect(), [4, 6], &device)
        };
        let expected = values(trained.forward(x()));
        let bytes = weights::to_bytes(trained.clone(), Precision::F32).unwrap();
        assert!(bytes.len() > 4 * (6 * 16 + 22 * 16 + 38 * 8), "{} bytes", bytes.len());
        let loaded = weights::from_bytes(Generator::new(6, &[16, 16], 8, 99, &device), &bytes).unwrap();
        assert_eq!(values(loaded.forward(x())), expected);
        assert!(weights::from_bytes(Generator::new(6, &[16, 32], 8, 1, &device), &bytes).is_err());
        assert!(weights::from_bytes(Generator::new(6, &[16, 16], 8, 1, &device), &bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn half_precision_weights_take_half_the_bytes_and_load_back_close() {
        let device = Device::flex();
        let trained = Generator::new(6, &[64, 64], 8, 1, &device).valid();
        let x = || {
            let mut rng = StdRng::seed_from_u64(4);
            tensor((0..24).map(|_| rng.random_range(-1.0f32..1.0)).collect(), [4, 6], &device)
        };
        let expected = values(trained.forward(x()));
        let full = weights::to_bytes(trained.clone(), Precision::F32).unwrap();
        let half = weights::to_bytes(trained, Precision::F16).unwrap();
        let ratio = half.len() as f64 / full.len() as f64;
        assert!(ratio < 0.6, "f16 record is {ratio:.2} of the f32 one");
        let loaded = weights::from_bytes(Generator::new(6, &[64, 64], 8, 99, &device).valid(), &half).unwrap();
        let got = values(loaded.forward(x()));
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-2 * (1.0 + e.abs()), "{g} vs {e}");
        }
        assert_ne!(got, expected, "f16 rounding should show");
    }
}
