import { distEnvFrom, expandHostlist, expandTasksPerNode, firstHost } from '../../src/util/dist-env';
import { UserError } from '../../src/util/errors';

const torchrun = { RANK: '1', WORLD_SIZE: '4', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'node01', MASTER_PORT: '29400' };
/** What `srun -N2 --ntasks-per-node=2` gives its second task. */
const slurm = {
  SLURM_STEP_ID: '0', SLURM_PROCID: '1', SLURM_NTASKS: '4', SLURM_LOCALID: '1', SLURM_NODEID: '0',
  SLURM_TASKS_PER_NODE: '2(x2)', SLURM_JOB_NODELIST: 'gpu[07-08]',
};

const without = (env: Record<string, string>, key: string) => Object.fromEntries(Object.entries(env).filter(([k]) => k !== key));

/** The one-line UserError message `distEnvFrom(env)` throws. */
function errorOf(env: Record<string, string>): string {
  try {
    distEnvFrom(env);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    const message = (e as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error(`no error for ${JSON.stringify(env)}`);
}

describe('distEnvFrom: torchrun', () => {
  test('reads every variable', () => {
    expect(distEnvFrom({ ...torchrun, TORCHELASTIC_RESTART_COUNT: '2', TORCHELASTIC_USE_AGENT_STORE: 'True' })).toEqual({
      rank: 1, worldSize: 4, localRank: 1, localWorldSize: 2, masterAddr: 'node01', masterPort: 29400,
      restartCount: 2, agentStore: true, source: 'torchrun',
    });
  });

  test('restart count 0 and no agent store when absent; False is false', () => {
    expect(distEnvFrom(torchrun)).toMatchObject({ restartCount: 0, agentStore: false });
    expect(distEnvFrom({ ...torchrun, TORCHELASTIC_USE_AGENT_STORE: 'False' })!.agentStore).toBe(false);
  });

  test('a hand-set environment without LOCAL_* is one node', () => {
    expect(distEnvFrom({ RANK: '2', WORLD_SIZE: '3', MASTER_ADDR: 'h', MASTER_PORT: '1' })).toMatchObject({ localRank: 2, localWorldSize: 3 });
    expect(distEnvFrom({ RANK: '3', WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' })).toMatchObject({ localRank: 1 });
  });

  test('a single process is null: nothing set, WORLD_SIZE=1, empty values', () => {
    expect(distEnvFrom({})).toBeNull();
    expect(distEnvFrom({ RANK: '0', WORLD_SIZE: '1' })).toBeNull();
    expect(distEnvFrom({ WORLD_SIZE: '1' })).toBeNull();
    expect(distEnvFrom({ RANK: '', WORLD_SIZE: '' })).toBeNull();
  });

  test('RANK wins over a Slurm step', () => {
    expect(distEnvFrom({ ...slurm, ...torchrun })).toMatchObject({ source: 'torchrun', rank: 1, worldSize: 4, masterAddr: 'node01' });
  });

  test.each([
    [{ RANK: 'one' }, 'RANK=one is not an integer'],
    [{ RANK: '1.5' }, 'RANK=1.5 is not an integer'],
    [{ RANK: '-1' }, 'RANK=-1 is negative'],
    [{ WORLD_SIZE: '0' }, 'WORLD_SIZE=0 must be at least 1'],
    [{ WORLD_SIZE: 'x' }, 'WORLD_SIZE=x is not an integer'],
    [{ RANK: '3', WORLD_SIZE: '2' }, 'RANK=3 is not below WORLD_SIZE=2'],
    [{ RANK: '4' }, 'RANK=4 is not below WORLD_SIZE=4'],
    [{ LOCAL_RANK: '2' }, 'LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2'],
    [{ LOCAL_RANK: '-2' }, 'LOCAL_RANK=-2 is negative'],
    [{ LOCAL_WORLD_SIZE: '8' }, 'LOCAL_WORLD_SIZE=8 is above WORLD_SIZE=4'],
    [{ LOCAL_WORLD_SIZE: '0' }, 'LOCAL_WORLD_SIZE=0 must be at least 1'],
    [{ MASTER_PORT: '0' }, 'MASTER_PORT=0 is not a port (1..65535)'],
    [{ MASTER_PORT: '65536' }, 'MASTER_PORT=65536 is not a port (1..65535)'],
    [{ MASTER_PORT: 'http' }, 'MASTER_PORT=http is not a port (1..65535)'],
    [{ TORCHELASTIC_RESTART_COUNT: '-1' }, 'TORCHELASTIC_RESTART_COUNT=-1 is negative'],
    [{ TORCHELASTIC_USE_AGENT_STORE: 'yes' }, 'TORCHELASTIC_USE_AGENT_STORE=yes is not True or False'],
  ])('%j → %s', (bad, message) => {
    expect(errorOf({ ...torchrun, ...bad })).toBe(message);
  });

  test('missing WORLD_SIZE, MASTER_ADDR or MASTER_PORT next to RANK', () => {
    const drop = (key: string) => without(torchrun, key);
    expect(errorOf(drop('WORLD_SIZE'))).toBe('RANK=1 is set but WORLD_SIZE is not');
    expect(errorOf(drop('MASTER_ADDR'))).toBe("MASTER_ADDR is not set (RANK=1 of WORLD_SIZE=4 needs rank 0's host)");
    expect(errorOf(drop('MASTER_PORT'))).toBe("MASTER_PORT is not set (RANK=1 of WORLD_SIZE=4 needs rank 0's port)");
  });

  test('WORLD_SIZE above 1 without RANK', () => {
    expect(errorOf({ WORLD_SIZE: '2' })).toMatch(/^WORLD_SIZE=2 is set but RANK is not/);
  });
});

describe('distEnvFrom: Slurm', () => {
  test('an srun step: rank, world, local rank and size, first host, default port', () => {
    expect(distEnvFrom(slurm)).toEqual({
      rank: 1, worldSize: 4, localRank: 1, localWorldSize: 2, masterAddr: 'gpu07', masterPort: 29500,
      restartCount: 0, agentStore: false, source: 'slurm',
    });
  });

  test('MASTER_ADDR and MASTER_PORT override the node list and the default port', () => {
    expect(distEnvFrom({ ...slurm, MASTER_ADDR: '10.0.0.1', MASTER_PORT: '1234' })).toMatchObject({ masterAddr: '10.0.0.1', masterPort: 1234 });
  });

  test("the step's node list wins over the job's", () => {
    expect(distEnvFrom({ ...slurm, SLURM_STEP_NODELIST: 'gpu08' })!.masterAddr).toBe('gpu08');
  });

  test('local world size: SLURM_NTASKS_PER_NODE, else this node\'s SLURM_TASKS_PER_NODE entry', () => {
    expect(distEnvFrom({ ...slurm, SLURM_NTASKS_PER_NODE: '3', SLURM_TASKS_PER_NODE: '1' })!.localWorldSize).toBe(3);
    const uneven = { ...slurm, SLURM_NTASKS: '11', SLURM_TASKS_PER_NODE: '4(x2),3', SLURM_LOCALID: '0' };
    expect(distEnvFrom(uneven)!.localWorldSize).toBe(4);
    expect(distEnvFrom({ ...uneven, SLURM_NODEID: '2' })!.localWorldSize).toBe(3);
    expect(distEnvFrom(without(uneven, 'SLURM_NODEID'))!.localWorldSize).toBe(4);
  });

  test('a single task, or the batch script (no job step), is a single process', () => {
    expect(distEnvFrom({ ...slurm, SLURM_NTASKS: '1', SLURM_PROCID: '0', SLURM_LOCALID: '0' })).toBeNull();
    const batch = without(slurm, 'SLURM_STEP_ID');
    expect(distEnvFrom({ ...batch, SLURM_PROCID: '0' })).toBeNull();
    expect(distEnvFrom({ ...batch, SLURM_STEPID: '3' })).toMatchObject({ source: 'slurm' });
  });

  test.each([
    [{ SLURM_PROCID: '4' }, 'SLURM_PROCID=4 is not below SLURM_NTASKS=4'],
    [{ SLURM_PROCID: 'a' }, 'SLURM_PROCID=a is not an integer'],
    [{ SLURM_NTASKS: '-4' }, 'SLURM_NTASKS=-4 is negative'],
    [{ SLURM_LOCALID: '2' }, "SLURM_LOCALID=2 is not below this node's task count 2 (from SLURM_TASKS_PER_NODE=2(x2))"],
    [{ SLURM_NTASKS_PER_NODE: '1' }, "SLURM_LOCALID=1 is not below this node's task count 1 (from SLURM_NTASKS_PER_NODE=1)"],
    [{ SLURM_TASKS_PER_NODE: '2(x)' }, 'SLURM_TASKS_PER_NODE=2(x) is not a Slurm task count list like 4(x2),3'],
    [{ SLURM_JOB_NODELIST: 'gpu[07-' }, "SLURM_JOB_NODELIST=gpu[07- is not a Slurm hostlist (a '[' without ']')"],
    [{ MASTER_PORT: '99999' }, 'MASTER_PORT=99999 is not a port (1..65535)'],
  ])('%j → %s', (bad, message) => {
    expect(errorOf({ ...slurm, ...bad })).toBe(message);
  });

  test('missing variables of a step are named', () => {
    const drop = (key: string) => without(slurm, key);
    expect(errorOf(drop('SLURM_PROCID'))).toBe('SLURM_PROCID is not set in a job step of SLURM_NTASKS=4');
    expect(errorOf(drop('SLURM_LOCALID'))).toBe('SLURM_LOCALID is not set in a job step of SLURM_NTASKS=4');
    expect(errorOf(drop('SLURM_TASKS_PER_NODE'))).toMatch(/^SLURM_TASKS_PER_NODE is not set/);
    expect(errorOf(drop('SLURM_JOB_NODELIST'))).toBe('SLURM_JOB_NODELIST is not set: set MASTER_ADDR to the host of SLURM_PROCID=0');
    expect(errorOf({ ...drop('SLURM_JOB_NODELIST'), SLURM_NODELIST: '(null)' })).toMatch(/^SLURM_JOB_NODELIST is not set/);
  });
});

describe('Slurm lists', () => {
  test.each([
    ['node[01-04,07],gpu5', 'node01'],
    ['a-b[3-5]', 'a-b3'],
    ['host1,host2', 'host1'],
    ['single', 'single'],
    ['n[007-009]-ib', 'n007-ib'],
    ['rack[2-3]n[10-11]', 'rack2n10'],
  ])('first host of %s is %s', (list, first) => {
    expect(firstHost(list)).toBe(first);
    expect(expandHostlist(list)[0]).toBe(first);
  });

  test('expansion keeps order and zero-padding, and multiplies brackets', () => {
    expect(expandHostlist('node[01-04,07],gpu5')).toEqual(['node01', 'node02', 'node03', 'node04', 'node07', 'gpu5']);
    expect(expandHostlist('n[8-10]')).toEqual(['n8', 'n9', 'n10']);
    expect(expandHostlist('n[098-100]')).toEqual(['n098', 'n099', 'n100']);
    expect(expandHostlist('r[1-2]n[1,3]')).toEqual(['r1n1', 'r1n3', 'r2n1', 'r2n3']);
    expect(expandHostlist('a-b[3-5],c')).toEqual(['a-b3', 'a-b4', 'a-b5', 'c']);
  });

  test.each([
    ['node[1-', "a '[' without ']'"],
    ['node1]', "a ']' without '['"],
    ['n[[1]]', 'nested brackets'],
    ['n[5-3]', "range '5-3' runs backwards"],
    ['n[a-b]', "range 'a-b'"],
    ['n[]', "range ''"],
    ['a,,b', 'an empty host name'],
  ])('%s is refused: %s', (list, why) => {
    expect(() => expandHostlist(list)).toThrow(new UserError(`SLURM_JOB_NODELIST=${list} is not a Slurm hostlist (${why})`));
    expect(() => firstHost(list)).toThrow(UserError);
  });

  test('a runaway range is refused instead of expanded', () => {
    expect(() => expandHostlist('n[1-99999999]')).toThrow('names more than 100000 hosts');
    expect(firstHost('n[1-99999999]')).toBe('n1');
  });

  test('tasks per node', () => {
    expect(expandTasksPerNode('4(x2),3')).toEqual([4, 4, 3]);
    expect(expandTasksPerNode('2')).toEqual([2]);
    expect(() => expandTasksPerNode('0(x2)')).toThrow(UserError);
    expect(() => expandTasksPerNode('4,')).toThrow('SLURM_TASKS_PER_NODE=4, is not a Slurm task count list like 4(x2),3');
  });
});
