/*
 * platform.h: the little a test firmware needs from the chip: text output, a cycle or tick
 * counter, and a way to stop. Output goes to ARM semihosting under emulation (KD_SEMIHOSTING)
 * and to a USART on hardware; the register addresses come from the board file as -D flags.
 */
#ifndef KD_PLATFORM_H
#define KD_PLATFORM_H

#include <stdint.h>

void kd_platform_init(void);
void kd_puts(const char *text);
/* Cycles (DWT) or SysTick ticks since kd_platform_init; kd_timer_source says which. */
uint32_t kd_timer_now(void);
const char *kd_timer_source(void);
void kd_exit(int code);

#endif
