//! Graph conditioning (Gen-T §3.1 step 3): a
//! GCN layer (Kipf & Welling 2017) over each graph, mean-pooled to one vector
//! per graph, learnt together with the network that reads it.
//!
//! Gen-T's layer is a single GCNConv of width 32 without activation, so the
//! pooled output is linear in the node features:
//! `mean_i (Â X W + b)_i = (mean_i (Â X)_i) W + b`, with
//! `Â = D^-½ (A + I) D^-½`. The propagation and pooling therefore happen once,
//! on the host, when a graph's features are built ([`pooled_features`]); only
//! `W` and `b` are trained, and one matrix product embeds every graph of a
//! window at each step, however many nodes they hold.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::critic::seeded_linear;

/// Graph conditioning for a table: `features` holds one pooled feature row of
/// `width` values per graph ([`pooled_features`]); `rows[r]` names the graph
/// row `r` belongs to.
#[derive(Debug, Clone, Copy)]
pub struct GraphInput<'a> {
    pub features: &'a [f32],
    pub width: usize,
    pub rows: &'a [u32],
}

impl GraphInput<'_> {
    pub fn graphs(&self) -> usize {
        self.features.len().checked_div(self.width).unwrap_or(0)
    }

    /// Why this input cannot condition `rows` rows, if it cannot.
    pub fn check(&self, rows: usize) -> Result<(), String> {
        if self.width == 0 || self.features.is_empty() || self.features.len() % self.width != 0 {
            return Err(format!("{} graph feature values do not divide into rows of {}", self.features.len(), self.width));
        }
        if self.rows.len() != rows {
            return Err(format!("{} graph ids for {rows} rows", self.rows.len()));
        }
        let graphs = self.graphs();
        if let Some(bad) = self.rows.iter().find(|&&g| g as usize >= graphs) {
            return Err(format!("graph id {bad} but only {graphs} graphs"));
        }
        if self.features.iter().any(|v| !v.is_finite()) {
            return Err("graph features hold a NaN or infinite value".into());
        }
        Ok(())
    }

    pub fn tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(self.features.to_vec(), [self.graphs(), self.width]), device)
    }
}

/// `mean_i (Â X)_i` for one graph: `nodes` feature rows of `width` values
/// (`features`, row-major) and each node's parent (edges are undirected for
/// the GCN). Each node contributes its features weighted by the column sum of
/// `Â`, `d_k^-½ (d_k^-½ + Σ_{j ~ k} d_j^-½) / n`, where `d` counts the
/// neighbours plus the self-loop.
pub fn pooled_features(features: &[f32], width: usize, parents: &[Option<u32>]) -> Vec<f32> {
    let n = parents.len();
    let mut degree = vec![1.0f64; n];
    for (child, parent) in parents.iter().enumerate() {
        if let Some(p) = parent.map(|p| p as usize).filter(|&p| p < n && p != child) {
            degree[p] += 1.0;
            degree[child] += 1.0;
        }
    }
    let inv_sqrt: Vec<f64> = degree.iter().map(|d| 1.0 / d.sqrt()).collect();
    // Column sums of Â: self-loop term plus one term per neighbour.
    let mut weight: Vec<f64> = inv_sqrt.iter().map(|s| s * s).collect();
    for (child, parent) in parents.iter().enumerate() {
        if let Some(p) = parent.map(|p| p as usize).filter(|&p| p < n && p != child) {
            weight[p] += inv_sqrt[p] * inv_sqrt[child];
            weight[child] += inv_sqrt[child] * inv_sqrt[p];
        }
    }
    let mut pooled = vec![0.0f64; width];
    for (k, w) in weight.iter().enumerate() {
        for (acc, &x) in pooled.iter_mut().zip(&features[k * width..(k + 1) * width]) {
            *acc += w * f64::from(x);
        }
    }
    pooled.into_iter().map(|v| (v / n.max(1) as f64) as f32).collect()
}

/// The trainable part of the GCN layer: pooled features → embedding.
#[derive(Module, Debug)]
pub struct GraphEncoder {
    gcn: Linear,
}

impl GraphEncoder {
    pub fn new(input: usize, output: usize, seed: u64, device: &Device) -> Self {
        GraphEncoder { gcn: seeded_linear(input, output, &mut StdRng::seed_from_u64(seed), device) }
    }

    /// One embedding row per graph, `[graphs, output]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.gcn.forward(features)
    }

    pub fn input(&self) -> usize {
        self.gcn.weight.dims()[0]
    }

    pub fn output(&self) -> usize {
        self.gcn.weight.dims()[1]
    }
}

#[cfg(test)]
mod tests {
    use super::pooled_features;

    /// Â X by the textbook definition, then the mean over nodes.
    fn dense(features: &[f32], width: usize, parents: &[Option<u32>]) -> Vec<f32> {
        let n = parents.len();
        let mut a = vec![vec![0.0f64; n]; n];
        for i in 0..n {
            a[i][i] = 1.0;
        }
        for (c, p) in parents.iter().enumerate() {
            if let Some(p) = p {
                a[*p as usize][c] = 1.0;
                a[c][*p as usize] = 1.0;
            }
        }
        let d: Vec<f64> = a.iter().map(|r| r.iter().sum()).collect();
        let mut out = vec![0.0f64; width];
        for i in 0..n {
            for k in 0..n {
                let norm = a[i][k] / (d[i] * d[k]).sqrt();
                for j in 0..width {
                    out[j] += norm * f64::from(features[k * width + j]);
                }
            }
        }
        out.into_iter().map(|v| (v / n as f64) as f32).collect()
    }

    #[test]
    fn pooled_features_equal_the_dense_gcn_propagation() {
        // A root with two children, the second with a child of its own.
        let parents = [None, Some(0), Some(0), Some(2)];
        let features: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let (fast, slow) = (pooled_features(&features, 3, &parents), dense(&features, 3, &parents));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-6, "{fast:?} vs {slow:?}");
        }
        // One node: Â = [1], the features themselves.
        assert_eq!(pooled_features(&[2.0, -1.0], 2, &[None]), vec![2.0, -1.0]);
    }
}
