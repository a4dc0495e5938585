/** Loads every kernel family; each declares its kernels with `kernel()` at module load. */
import './elementwise';
import './reduce';
import './matmul';
import './shape';
import './indexing';
import './creation';
import './nn';
import './fused';
import './dist';
import './layer';
