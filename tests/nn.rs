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
