//! Structured loops for hand-written Cranelift kernels: a counted loop with
//! loop-carried values (accumulators) as block parameters.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, BlockArg, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Emits `for i in (start..end).step_by(step) { carried = body(i, carried) }`
/// and returns the carried values after the loop. `start` and `end` are
/// i64 values; the body must return values of the same types as `carried`.
pub fn counted(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    carried: &[Value],
    body: impl FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value>,
) -> Vec<Value> {
    let types: Vec<_> = carried.iter().map(|&v| b.func.dfg.value_type(v)).collect();
    let header = b.create_block();
    let body_block = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    for &ty in &types {
        b.append_block_param(header, ty);
        b.append_block_param(exit, ty);
    }
    let mut initial: Vec<BlockArg> = vec![start.into()];
    initial.extend(carried.iter().map(|&v| BlockArg::from(v)));
    b.ins().jump(header, &initial);

    b.switch_to_block(header);
    let params = b.block_params(header).to_vec();
    let (i, current) = (params[0], params[1..].to_vec());
    let done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, i, end);
    let exit_args: Vec<BlockArg> = current.iter().map(|&v| v.into()).collect();
    b.ins().brif(done, exit, &exit_args, body_block, &[]);

    b.switch_to_block(body_block);
    let next = body(b, i, &current);
    let i_next = b.ins().iadd_imm_s(i, step);
    let mut args: Vec<BlockArg> = vec![i_next.into()];
    args.extend(next.iter().map(|&v| BlockArg::from(v)));
    b.ins().jump(header, &args);

    b.switch_to_block(exit);
    b.block_params(exit).to_vec()
}
