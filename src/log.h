/* Internal logging.  Off unless sluice_set_log() or $SLUICE_LOG turns it
 * on; sl_log_enabled() is one relaxed atomic load, so a disabled log costs
 * the hot path nothing more. */
#ifndef SL_LOG_H
#define SL_LOG_H

#include "sluice.h"

int sl_log_enabled(sluice_log_level level);
void sl_log(sluice_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SL_DEBUG(...) do { if (sl_log_enabled(SLUICE_LOG_DEBUG)) sl_log(SLUICE_LOG_DEBUG, __VA_ARGS__); } while (0)
#define SL_INFO(...)  do { if (sl_log_enabled(SLUICE_LOG_INFO))  sl_log(SLUICE_LOG_INFO, __VA_ARGS__); } while (0)
#define SL_WARN(...)  do { if (sl_log_enabled(SLUICE_LOG_WARN))  sl_log(SLUICE_LOG_WARN, __VA_ARGS__); } while (0)
#define SL_ERROR(...) do { if (sl_log_enabled(SLUICE_LOG_ERROR)) sl_log(SLUICE_LOG_ERROR, __VA_ARGS__); } while (0)

#endif
