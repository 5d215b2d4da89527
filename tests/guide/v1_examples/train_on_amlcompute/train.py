"""Stands in for the example's train.py, as it is: Ridge regression on scikit-learn's bundled
diabetes data for a range of alphas, logging alpha and mse, each model saved to outputs/."""

import os

import joblib
import numpy as np
from packaging.version import Version
from sklearn import __version__ as sklearnver
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

from trainhub.sdk.run import Run

assert Version(sklearnver) >= Version("0.23.0")
os.makedirs("./outputs", exist_ok=True)

X, y = load_diabetes(return_X_y=True)

run = Run.get_context()

X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)

for alpha in np.arange(0.0, 1.0, 0.25):
    reg = Ridge(alpha=alpha)
    reg.fit(X_train, y_train)
    mse = mean_squared_error(reg.predict(X_test), y_test)
    run.log("alpha", alpha)
    run.log("mse", mse)
    joblib.dump(value=reg, filename=os.path.join("./outputs/", f"ridge_{alpha:.2f}.pkl"))
    print(f"alpha is {alpha:.2f}, and mse is {mse:0.2f}", flush=True)
