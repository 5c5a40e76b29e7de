//! The VJP given the forward's multipliers searches no row again (a test binary of its
//! own: the count of searched rows is process-wide, and other tests would move it).

use clipresc_core::{
    project_row_searches, project_vjp, project_vjp_given, project_with_multipliers, Bound, Eps,
    ProjectBatch, ProjectGrads, ProjectNorm,
};

#[test]
fn one_search_per_row_for_forward_and_backward() {
    let (rows, n) = (20usize, 500usize);
    let x: Vec<f64> = (0..rows * n)
        .map(|i| ((i * 37) % 101) as f64 / 101.0)
        .collect();
    let z: Vec<f64> = (0..rows * n)
        .map(|i| x[i] + (((i * 53) % 97) as f64 / 97.0 - 0.5))
        .collect();
    let g: Vec<f64> = (0..rows * n).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
    for norm in [ProjectNorm::L1, ProjectNorm::L2] {
        let b = ProjectBatch {
            x: &x,
            z: &z,
            rows,
            n,
            lower: Bound::Scalar(0.0),
            upper: Bound::Scalar(1.0),
            eps: Eps::Scalar(2.0),
            norm,
        };
        let (mut y, mut m) = (vec![0.0; rows * n], vec![0.0; rows]);
        let before = project_row_searches();
        project_with_multipliers(&b, &mut y, &mut m).unwrap();
        assert_eq!(project_row_searches() - before, rows, "{norm:?} forward");
        let (mut gx, mut gz, mut ge) = (vec![0.0; rows * n], vec![0.0; rows * n], vec![0.0; rows]);
        let grads = ProjectGrads {
            x: &mut gx,
            z: &mut gz,
            eps: &mut ge,
        };
        let before = project_row_searches();
        project_vjp_given(&b, &g, &m, grads).unwrap();
        assert_eq!(project_row_searches(), before, "{norm:?} backward given");
        let grads = ProjectGrads {
            x: &mut gx,
            z: &mut gz,
            eps: &mut ge,
        };
        project_vjp(&b, &g, grads).unwrap();
        assert_eq!(
            project_row_searches() - before,
            rows,
            "{norm:?} backward solving"
        );
    }
}
