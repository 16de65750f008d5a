/* printf/strtod/libm checks. Exactly specified operations (arithmetic, sqrt,
 * strtod, fma) are printed with full precision (%a / %.17g). Transcendental
 * functions are printed with %.10g only: glibc selects FMA/AVX2 variants of
 * sin/exp/log/pow via CPUID (ifunc), and those may differ in the last ulp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile double vd[] = {0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1.5, 3.141592653589793, 2.718281828459045,
                               1e-300, 1e300, 123456789.123456789, 5e-324, 1.7976931348623157e308, 1.0 / 3.0};
static volatile float vf[] = {0.0f, 1.0f, 0.1f, -2.5f, 3.14159265f, 1e-38f, 3.4e38f, 16777217.0f};

int main(void) {
    for (size_t i = 0; i < sizeof(vd) / sizeof(vd[0]); i++) {
        double d = vd[i];
        printf("d[%zu]: f=%f e=%e g=%g a=%a .17g=%.17g\n", i, d, d, d, d, d);
    }
    for (size_t i = 0; i < sizeof(vf) / sizeof(vf[0]); i++) {
        float f = vf[i];
        printf("f[%zu]: f=%.6f e=%.8e g=%g a=%a\n", i, f, f, f, f);
    }
    printf("widths: [%10.3f] [%-10.2e] [%+g] [% .0f] [%#.0f] [%08.3f]\n", 3.14159, 2.5e-5, 42.0, 2.5, 3.0, -1.5);
    printf("rounding: %.0f %.0f %.0f %.0f %.1f %.2f\n", 0.5, 1.5, 2.5, -0.5, 0.25, 1.005);
    printf("big: %.0f\n", 1e22);
    volatile double zero = 0.0;
    double inf = 1.0 / zero, nan_ = zero / zero;
    printf("special: %f %e %g %F isinf=%d isnan=%d\n", inf, -inf, fabs(nan_), inf, isinf(inf) != 0, isnan(nan_) != 0);

    const char *inputs[] = {"0", "1", "-1.5", "0.1", "1e10", "1e-320", "2.2250738585072014e-308",
                            "1.7976931348623157e308", "1e400", "-1e400", "inf", "-Infinity", "nan",
                            "0x1.8p1", "0X10", "  -12.5e3xyz", "3.14159265358979323846264338327950288",
                            "123456789012345678901234567890", ".5", "5.", "abc", "1e", "0.000001"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        char *end;
        double d = strtod(inputs[i], &end);
        printf("strtod(\"%s\") = %.17g [%a] consumed=%d\n", inputs[i],
               isnan(d) ? fabs(d) : d, isnan(d) ? fabs(d) : d, (int)(end - inputs[i]));
    }
    printf("strtof(\"0.1\") = %a\n", strtof("0.1", NULL));
    printf("atof(\"2.5e2\") = %g\n", atof("2.5e2"));

    volatile double a = 0.1, b = 0.2, c = 3.0;
    printf("0.1+0.2 = %.17g [%a]\n", a + b, a + b);
    printf("1/3 = %.17g [%a]\n", 1.0 / c, 1.0 / c);
    printf("float 1/3 = %a\n", (float)(1.0f / (float)c));
    printf("fma(0.1,0.2,0.3) = %a\n", fma(a, b, 0.3));
    for (int i = 0; i <= 10; i++) {
        volatile double x = i * 1.7;
        printf("sqrt(%g)=%a ", (double)x, sqrt(x));
    }
    printf("\nsqrt(-1) isnan=%d sqrt(2)=%.17g\n", isnan(sqrt(-1.0 + zero)) != 0, sqrt(2.0 + zero));
    printf("floor/ceil/round/trunc(-2.5): %g %g %g %g\n", floor(-2.5 + zero), ceil(-2.5 + zero),
           round(-2.5 + zero), trunc(-2.5 + zero));
    printf("fmod(10,3)=%g ldexp(1,-10)=%a frexp: ", fmod(10.0 + zero, 3.0), ldexp(1.0 + zero, -10));
    int ex;
    double m = frexp(48.0 + zero, &ex);
    printf("%g*2^%d\n", m, ex);

    for (int i = -3; i <= 6; i++) {
        volatile double x = i * 0.75;
        printf("x=%g sin=%.10g cos=%.10g exp=%.10g atan=%.10g\n", (double)x, sin(x), cos(x), exp(x), atan(x));
    }
    for (int i = 1; i <= 6; i++) {
        volatile double x = i * 2.5;
        printf("x=%g log=%.10g log10=%.10g pow(x,1.5)=%.10g pow(2,x)=%.10g\n", (double)x, log(x), log10(x),
               pow(x, 1.5), pow(2.0, x));
    }
    printf("pow(2,10)=%.17g pow(10,-2) ~ %.10g exp(0)=%g log(1)=%g\n", pow(2.0 + zero, 10.0), pow(10.0 + zero, -2.0),
           exp(zero), log(1.0 + zero));
    /* A running double accumulation (exact operations only -> bit reproducible). */
    double acc = 0;
    for (int i = 1; i <= 100000; i++) acc += 1.0 / i;
    printf("harmonic(100000) = %.17g\n", acc);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%.3f|%.3e", 1234.5678, 0.00012345);
    printf("snprintf: %s (%d)\n", buf, n);
    return 0;
}
