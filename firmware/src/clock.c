/*
 * clock.c: the part's full core clock, as a product runs, so that cycles measured on the board are
 * the cycles a product gets. From the internal 16 MHz HSI (no crystal assumed, so every board of the
 * part works), with the flash wait states the reference manual asks for at that clock and the flash
 * accelerator (ART / prefetch, instruction and data caches) enabled. The values come from the board
 * file as -D flags (KD_CLK_*); the register layouts per family:
 *
 *   F2/F4 (RM0033, RM0090 section 6/7): RCC at 0x40023800, FLASH_ACR at 0x40023C00 (LATENCY, PRFTEN,
 *          ICEN, DCEN). F405: PLL 16 / 16 * 336 / 2 = 168 MHz, 5 wait states (2.7-3.6 V), APB1 /4,
 *          APB2 /2. F205: 16 / 16 * 240 / 2 = 120 MHz, 3 wait states.
 *   F7 (RM0385 section 5): as F4, plus over-drive (PWR_CR1 ODEN, ODSWEN) above 180 MHz, FLASH_ACR
 *          LATENCY, PRFTEN and ARTEN, and the Cortex-M7 L1 instruction and data caches.
 *          F746: 16 / 8 * 216 / 2 = 216 MHz, 7 wait states.
 *   L4 (RM0351 section 6): RCC at 0x40021000, FLASH_ACR at 0x40022000; PLL from HSI16:
 *          16 / 1 * 10 / 2 = 80 MHz (range 1, the reset default), 4 wait states.
 *
 * Every wait is bounded: where the PLL never locks (QEMU models no STM32 RCC), the part stays on its
 * reset clock and kd_clock_init says so by returning that clock.
 */
#include "clock.h"

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
#define WAIT_LIMIT 200000u

uint32_t kd_apb1_hz = KD_CLK_RESET_HZ;

#if defined(KD_CLK_F4) || defined(KD_CLK_F7) || defined(KD_CLK_L4)
static int wait_set(uint32_t addr, uint32_t mask, uint32_t value)
{
    uint32_t n;
    for (n = 0; n < WAIT_LIMIT; ++n) {
        if ((REG32(addr) & mask) == value) {
            return 1;
        }
    }
    return 0;
}
#endif

#if defined(KD_CLK_F7)
static void enable_m7_caches(void)
{
    /* SCB: ICIALLU, CSSELR, CCSIDR, DCISW, CCR (ARMv7-M architecture reference manual, B3.2) */
    uint32_t sets, ways, s, w, ccsidr;
    __asm volatile("dsb\n\tisb" ::: "memory");
    REG32(0xE000EF50u) = 0u; /* invalidate the instruction cache */
    REG32(0xE000ED84u) = 0u; /* select the L1 data cache */
    __asm volatile("dsb" ::: "memory");
    ccsidr = REG32(0xE000ED80u);
    sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
    ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
    for (s = 0; s < sets; ++s) {
        for (w = 0; w < ways; ++w) {
            REG32(0xE000EF60u) = (s << 5) | (w << 30); /* 32-byte lines, 4 ways */
        }
    }
    __asm volatile("dsb" ::: "memory");
    REG32(0xE000ED14u) |= (1u << 17) | (1u << 16); /* CCR.IC, CCR.DC */
    __asm volatile("dsb\n\tisb" ::: "memory");
}
#endif

#if defined(KD_CLK_F4) || defined(KD_CLK_F7)
#define RCC_CR 0x40023800u
#define RCC_PLLCFGR 0x40023804u
#define RCC_CFGR 0x40023808u
#define RCC_APB1ENR 0x40023840u
#define FLASH_ACR 0x40023C00u

uint32_t kd_clock_init(void)
{
#if defined(KD_CLK_F7)
    REG32(FLASH_ACR) = KD_CLK_FLASH_LATENCY | (1u << 8) | (1u << 9); /* LATENCY, PRFTEN, ARTEN */
#else
    REG32(FLASH_ACR) = KD_CLK_FLASH_LATENCY | (1u << 8) | (1u << 9) | (1u << 10); /* PRFTEN, ICEN, DCEN */
#endif
    if (!wait_set(FLASH_ACR, 0xFu, KD_CLK_FLASH_LATENCY)) {
        return KD_CLK_RESET_HZ;
    }
    REG32(RCC_APB1ENR) |= 1u << 28; /* PWREN: the voltage scaling stays at its reset value, scale 1 */
    /* M, N, P, source (HSI: 0) and Q; the reserved bits keep their reset values */
    REG32(RCC_PLLCFGR) = (REG32(RCC_PLLCFGR) & ~0x0F437FFFu) | KD_CLK_PLL_M | (KD_CLK_PLL_N << 6) |
                         (KD_CLK_PLL_P_BITS << 16) | (KD_CLK_PLL_Q << 24);
    REG32(RCC_CR) |= 1u << 24; /* PLLON (source HSI: PLLSRC = 0) */
    if (!wait_set(RCC_CR, 1u << 25, 1u << 25)) {
        return KD_CLK_RESET_HZ;
    }
#if defined(KD_CLK_F7)
    REG32(0x40007000u) |= 1u << 16; /* PWR_CR1.ODEN */
    if (!wait_set(0x40007004u, 1u << 16, 1u << 16)) {
        return KD_CLK_RESET_HZ;
    }
    REG32(0x40007000u) |= 1u << 17; /* ODSWEN */
    if (!wait_set(0x40007004u, 1u << 17, 1u << 17)) {
        return KD_CLK_RESET_HZ;
    }
#endif
    REG32(RCC_CFGR) = (REG32(RCC_CFGR) & ~0xFCF0u) | (KD_CLK_PPRE1 << 10) | (KD_CLK_PPRE2 << 13);
    REG32(RCC_CFGR) = (REG32(RCC_CFGR) & ~3u) | 2u; /* SW = PLL */
    if (!wait_set(RCC_CFGR, 0xCu, 0x8u)) {
        return KD_CLK_RESET_HZ;
    }
#if defined(KD_CLK_F7)
    enable_m7_caches();
#endif
    kd_apb1_hz = KD_CLK_APB1_HZ;
    return KD_CLK_CORE_HZ;
}

#elif defined(KD_CLK_L4)
#define RCC_CR 0x40021000u
#define RCC_CFGR 0x40021008u
#define RCC_PLLCFGR 0x4002100Cu
#define FLASH_ACR 0x40022000u

uint32_t kd_clock_init(void)
{
    REG32(RCC_CR) |= 1u << 8; /* HSION */
    if (!wait_set(RCC_CR, 1u << 10, 1u << 10)) {
        return KD_CLK_RESET_HZ;
    }
    REG32(FLASH_ACR) = KD_CLK_FLASH_LATENCY | (1u << 8) | (1u << 9) | (1u << 10); /* PRFTEN, ICEN, DCEN */
    if (!wait_set(FLASH_ACR, 7u, KD_CLK_FLASH_LATENCY)) {
        return KD_CLK_RESET_HZ;
    }
    /* PLLSRC = HSI16, PLLM = 1, PLLN, PLLR = /2 (00), PLLREN */
    REG32(RCC_PLLCFGR) = 2u | ((KD_CLK_PLL_M - 1u) << 4) | (KD_CLK_PLL_N << 8) | (1u << 24);
    REG32(RCC_CR) |= 1u << 24; /* PLLON */
    if (!wait_set(RCC_CR, 1u << 25, 1u << 25)) {
        return KD_CLK_RESET_HZ;
    }
    REG32(RCC_CFGR) = (REG32(RCC_CFGR) & ~3u) | 3u; /* SW = PLL, AHB and APB prescalers 1 */
    if (!wait_set(RCC_CFGR, 0xCu, 0xCu)) {
        return KD_CLK_RESET_HZ;
    }
    kd_apb1_hz = KD_CLK_APB1_HZ;
    return KD_CLK_CORE_HZ;
}

#else
uint32_t kd_clock_init(void)
{
    return KD_CLK_RESET_HZ;
}
#endif
