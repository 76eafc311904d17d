/*
 * platform.c: semihosting or USART output, DWT/SysTick timing, exit. Only the registers used
 * here are defined (Cortex-M system control space, and the board's RCC/GPIO/USART from -D flags).
 */
#include "platform.h"

#include "clock.h"

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* Cortex-M system control space (identical on M3/M4/M7). */
#define DEMCR REG32(0xE000EDFCu)
#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CYCCNT REG32(0xE0001004u)
#define DWT_LAR REG32(0xE0001FB0u)
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)

static volatile uint32_t systick_wraps;
static int use_dwt;
static uint32_t core_hz = KD_CLK_RESET_HZ;

uint32_t kd_core_hz(void)
{
    return core_hz;
}

void SysTick_Handler(void)
{
    systick_wraps++;
}

#ifdef KD_SEMIHOSTING
static int semihost(int op, const void *arg)
{
    register int r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void kd_puts(const char *text)
{
    (void)semihost(0x04, text); /* SYS_WRITE0 */
}

void kd_exit(int code)
{
    /* SYS_EXIT: ADP_Stopped_ApplicationExit (0x20026) is a clean exit, RunTimeErrorUnknown (0x20023) not. */
    (void)semihost(0x18, (const void *)(uintptr_t)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

static void output_init(void)
{
}
#else
/* USART on the board's pins (TX and RX), 115200 8N1 from the APB1 clock clock.c set. KD_USART_V2
 * selects the register layout of the F7/L4 USART (CR1, BRR, ISR, RDR, TDR) over the F4's (SR, DR,
 * BRR, CR1). */
static void set_alternate(uint32_t pin)
{
    /* MODER = 2 (alternate function) and the AF number in AFRL/AFRH */
    REG32(KD_GPIO_BASE + 0x00u) = (REG32(KD_GPIO_BASE + 0x00u) & ~(3u << (2 * pin))) | (2u << (2 * pin));
    REG32(KD_GPIO_BASE + 0x20u + 4u * (pin / 8)) =
        (REG32(KD_GPIO_BASE + 0x20u + 4u * (pin / 8)) & ~(0xFu << (4 * (pin % 8)))) |
        ((uint32_t)KD_TX_AF << (4 * (pin % 8)));
}

static void output_init(void)
{
    REG32(KD_RCC_GPIO_ENR) |= KD_RCC_GPIO_BIT;
    REG32(KD_RCC_USART_ENR) |= KD_RCC_USART_BIT;
    (void)REG32(KD_RCC_USART_ENR);
    set_alternate(KD_TX_PIN);
    set_alternate(KD_RX_PIN);
#ifdef KD_USART_V2
    REG32(KD_USART_BASE + 0x0Cu) = (kd_apb1_hz + 57600u) / 115200u;
    REG32(KD_USART_BASE + 0x00u) = (1u << 3) | (1u << 2) | 1u; /* TE, RE, UE */
#else
    REG32(KD_USART_BASE + 0x08u) = (kd_apb1_hz + 57600u) / 115200u;
    REG32(KD_USART_BASE + 0x0Cu) = (1u << 13) | (1u << 3) | (1u << 2); /* UE, TE, RE */
#endif
}

static void put_byte(uint8_t byte)
{
#ifdef KD_USART_V2
    while ((REG32(KD_USART_BASE + 0x1Cu) & (1u << 7)) == 0u) {
    }
    REG32(KD_USART_BASE + 0x28u) = byte;
#else
    while ((REG32(KD_USART_BASE + 0x00u) & (1u << 7)) == 0u) {
    }
    REG32(KD_USART_BASE + 0x04u) = byte;
#endif
}

uint8_t kd_getc(void)
{
#ifdef KD_USART_V2
    if (REG32(KD_USART_BASE + 0x1Cu) & (1u << 3)) {
        REG32(KD_USART_BASE + 0x20u) = 1u << 3; /* ICR.ORECF: an overrun, the host's checksum tells */
    }
    while ((REG32(KD_USART_BASE + 0x1Cu) & (1u << 5)) == 0u) {
    }
    return (uint8_t)REG32(KD_USART_BASE + 0x24u);
#else
    while ((REG32(KD_USART_BASE + 0x00u) & (1u << 5)) == 0u) {
    }
    return (uint8_t)REG32(KD_USART_BASE + 0x04u); /* reading SR then DR also clears an overrun */
#endif
}

void kd_write(const uint8_t *data, uint32_t n)
{
    uint32_t k;
    for (k = 0; k < n; ++k) {
        put_byte(data[k]);
    }
}

void kd_puts(const char *text)
{
    for (; *text != '\0'; ++text) {
        put_byte((uint8_t)*text);
    }
}

void kd_exit(int code)
{
    kd_puts(code == 0 ? "KD2MCU EXIT 0\n" : "KD2MCU EXIT 1\n");
    for (;;) {
    }
}
#endif

void kd_platform_init(void)
{
    volatile uint32_t spin;
    uint32_t before;
#ifndef KD_SEMIHOSTING
    core_hz = kd_clock_init(); /* before the USART: its divider follows the clock */
#endif
    output_init();
    /* DWT cycle counter where it counts (real silicon); QEMU's reads zero. */
    DEMCR |= 1u << 24;
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
    before = DWT_CYCCNT;
    for (spin = 0; spin < 100u; ++spin) {
    }
    use_dwt = DWT_CYCCNT != before;
    if (!use_dwt) {
        /* SysTick on the core clock, 24-bit, wraps counted by the interrupt. */
        SYST_RVR = 0x00FFFFFFu;
        SYST_CVR = 0;
        SYST_CSR = 7u; /* CLKSOURCE = core clock, TICKINT, ENABLE */
    }
}

uint32_t kd_timer_now(void)
{
    uint32_t wraps, value;
    if (use_dwt) {
        return DWT_CYCCNT;
    }
    do {
        wraps = systick_wraps;
        value = 0x00FFFFFFu - SYST_CVR;
    } while (wraps != systick_wraps);
    return (wraps << 24) + value;
}

const char *kd_timer_source(void)
{
    return use_dwt ? "dwt" : "systick";
}
