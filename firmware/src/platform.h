/*
 * platform.h: the little a test firmware needs from the chip: text output, a cycle or tick
 * counter, and a way to stop. Output goes to ARM semihosting under emulation (KD_SEMIHOSTING)
 * and to a USART on hardware (115200 8N1, which also receives: the serial runner of kd2mcu
 * validate); the register addresses come from the board file as -D flags. On hardware
 * kd_platform_init first sets the part's full core clock (clock.c).
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
/* The core clock running after kd_platform_init, in Hz. */
uint32_t kd_core_hz(void);
#ifndef KD_SEMIHOSTING
/* One byte from the USART (blocks until one arrives), and raw bytes to it. */
uint8_t kd_getc(void);
void kd_write(const uint8_t *data, uint32_t n);
#endif

#endif
