/*
 * clock.h: the board's full core clock (clock.c), the values from the board file (KD_CLK_*).
 */
#ifndef KD_CLOCK_H
#define KD_CLOCK_H

#include <stdint.h>

#ifndef KD_CLK_RESET_HZ
#define KD_CLK_RESET_HZ 16000000u
#endif

/* The APB1 clock after kd_clock_init (the USART's), the reset clock until then. */
extern uint32_t kd_apb1_hz;

/* Set up the PLL, flash wait states and caches; returns the core clock now running, in Hz (the
 * reset clock where the PLL did not lock). */
uint32_t kd_clock_init(void);

#endif
